"""A reader for TensorFlow's tensor-bundle checkpoints (``ckpt-N.index`` + ``ckpt-N.data-*``),
without TensorFlow.

The format, as far as this reader needs it:

* ``.index`` is a LevelDB-style sorted table (SSTable). The file ends with a 48-byte footer:
  two block handles (metaindex, index; each ``varint64 offset, varint64 size``), zero padding,
  and the 8-byte magic ``0xdb4775248b80fb57`` (little endian). Every block is followed by a
  5-byte trailer: a compression byte (0 = none, 1 = snappy) and the masked CRC32C of the block
  contents plus that byte. A block holds prefix-compressed entries
  (``varint shared, varint unshared, varint value_len, key suffix, value``) followed by a
  ``uint32`` restart array and its ``uint32`` length. The index block maps the last key of each
  data block to that block's handle.
* The entry with the empty key is a ``BundleHeaderProto`` (number of shards, endianness); every
  other key is a tensor name whose value is a ``BundleEntryProto``: dtype, shape, shard id,
  byte offset and size in ``.data-<shard>-of-<N>``, and the masked CRC32C of the tensor bytes.
* Tensors are stored raw, little endian, row-major.

Both protobuf messages are decoded by hand (a few varint fields). Nothing from the file is
executed or unpickled; string tensors (the object graph) are listed but never decoded.
TensorFlow writes bundle tables uncompressed; a snappy-compressed block is decoded by the small
decompressor below (the format allows it).

CRC32C: block checksums of the ``.index`` are always verified (pure Python, the index is
small); tensor checksums are verified when the optional ``crc32c`` or ``google-crc32c`` package is
installed, or with ``verify_data=True`` (pure Python, slow: ~MB/s).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CheckpointError

MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48

# tensorflow/core/framework/types.proto DataType -> numpy (little endian)
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 4: np.dtype("u1"), 5: np.dtype("<i2"),
    6: np.dtype("i1"), 9: np.dtype("<i8"), 10: np.dtype("?"), 17: np.dtype("<u2"), 19: np.dtype("<f2"),
    22: np.dtype("<u4"), 23: np.dtype("<u8"),
}
DTYPE_NAMES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string",
               9: "int64", 10: "bool", 14: "bfloat16", 17: "uint16", 19: "float16", 22: "uint32", 23: "uint64"}
DT_STRING, DT_BFLOAT16 = 7, 14


# -- CRC32C (Castagnoli), table-driven --------------------------------------------------------------
def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC32C of ``data`` (pure Python; uses the ``crc32c``/``google-crc32c`` package if installed)."""
    fast = _fast_crc32c()
    if fast is not None:
        return fast(bytes(data), crc)
    crc ^= 0xFFFFFFFF
    table = _CRC_TABLE
    for b in bytes(data):
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _fast_crc32c():
    try:
        import crc32c as mod  # type: ignore

        return lambda data, crc: mod.crc32c(data, crc)
    except ImportError:
        pass
    try:
        import google_crc32c  # type: ignore

        return lambda data, crc: google_crc32c.extend(crc, data)
    except ImportError:
        return None


def mask_crc(crc: int) -> int:
    """LevelDB/TensorFlow's masked CRC: rotate right by 15 and add a constant."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# -- varints and protobuf ---------------------------------------------------------------------------
def _varint(buf: bytes, pos: int, end: int | None = None) -> tuple[int, int]:
    end = len(buf) if end is None else end
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise ValueError("truncated or overlong varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _proto_fields(buf: bytes) -> list[tuple[int, int, object]]:
    """``(field number, wire type, value)``: varints as int, length-delimited as bytes, fixed as int."""
    out, pos = [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise ValueError("truncated fixed64")
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            if pos + n > len(buf):
                raise ValueError("truncated length-delimited field")
            value, pos = bytes(buf[pos:pos + n]), pos + n
        elif wire == 5:
            if pos + 4 > len(buf):
                raise ValueError("truncated fixed32")
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((field, wire, value))
    return out


@dataclass(frozen=True)
class BundleEntry:
    """Where one tensor lives: dtype code, shape, shard, byte offset/size, masked CRC32C."""

    name: str
    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc: int | None
    sliced: bool = False

    @property
    def dtype_name(self) -> str:
        return DTYPE_NAMES.get(self.dtype, f"dtype{self.dtype}")


def _parse_shape(buf: bytes) -> tuple[int, ...]:
    dims = []
    for field, _, value in _proto_fields(buf):
        if field == 2:  # Dim
            size = 0
            for f2, _, v2 in _proto_fields(value):
                if f2 == 1:
                    size = v2 if v2 < 1 << 63 else v2 - (1 << 64)
            dims.append(size)
        elif field == 3 and value:
            raise ValueError("tensor of unknown rank")
    return tuple(dims)


def _parse_entry(name: str, buf: bytes) -> BundleEntry:
    dtype, shape, shard, offset, size, crc, sliced = 0, (), 0, 0, 0, None, False
    for field, _, value in _proto_fields(buf):
        if field == 1:
            dtype = value
        elif field == 2:
            shape = _parse_shape(value)
        elif field == 3:
            shard = value
        elif field == 4:
            offset = value
        elif field == 5:
            size = value
        elif field == 6:
            crc = value
        elif field == 7:
            sliced = True
    return BundleEntry(name, dtype, shape, shard, offset, size, crc, sliced)


# -- snappy (raw format), for tables written with compression ----------------------------------------
def snappy_decompress(data: bytes) -> bytes:
    """Decode a raw snappy block (no framing)."""
    n, pos = _varint(data, 0)
    out = bytearray()
    while pos < len(data):
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal
            length = tag >> 2
            if length >= 60:
                extra = length - 59
                length = int.from_bytes(data[pos:pos + extra], "little")
                pos += extra
            length += 1
            if pos + length > len(data):
                raise ValueError("truncated snappy literal")
            out += data[pos:pos + length]
            pos += length
            continue
        if kind == 1:
            length = 4 + ((tag >> 2) & 7)
            offset = ((tag >> 5) << 8) | data[pos]
            pos += 1
        elif kind == 2:
            length = (tag >> 2) + 1
            offset = int.from_bytes(data[pos:pos + 2], "little")
            pos += 2
        else:
            length = (tag >> 2) + 1
            offset = int.from_bytes(data[pos:pos + 4], "little")
            pos += 4
        if offset == 0 or offset > len(out):
            raise ValueError("bad snappy back-reference")
        for _ in range(length):  # overlapping copies are allowed
            out.append(out[-offset])
    if len(out) != n:
        raise ValueError("snappy length mismatch")
    return bytes(out)


# -- the table --------------------------------------------------------------------------------------
def _read_block(data: bytes, offset: int, size: int, where: str) -> bytes:
    if offset + size + 5 > len(data):
        raise ValueError(f"{where} block at {offset}+{size} runs past the end of the file")
    contents = data[offset:offset + size]
    kind = data[offset + size]
    (stored,) = struct.unpack_from("<I", data, offset + size + 1)
    if mask_crc(crc32c(bytes(data[offset:offset + size + 1]))) != stored:
        raise ValueError(f"{where} block at {offset} fails its CRC32C check")
    if kind == 0:
        return bytes(contents)
    if kind == 1:
        return snappy_decompress(bytes(contents))
    raise ValueError(f"{where} block at {offset} has unknown compression type {kind}")


def _block_entries(block: bytes):
    """Yield ``(key, value)`` of a table block."""
    if len(block) < 4:
        raise ValueError("block too short")
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * num_restarts
    if end < 0:
        raise ValueError("bad restart array")
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos, end)
        unshared, pos = _varint(block, pos, end)
        vlen, pos = _varint(block, pos, end)
        if shared > len(key) or pos + unshared + vlen > end:
            raise ValueError("corrupt block entry")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        yield key, block[pos:pos + vlen]
        pos += vlen


def read_index(index_path: str | os.PathLike) -> tuple[int, dict[str, BundleEntry]]:
    """Parse a ``.index`` file: ``(num_shards, {name: BundleEntry})``."""
    path = Path(index_path)
    data = path.read_bytes()
    try:
        if len(data) < FOOTER_SIZE:
            raise ValueError(f"{len(data)} bytes, shorter than the {FOOTER_SIZE}-byte table footer")
        footer = data[-FOOTER_SIZE:]
        if struct.unpack_from("<Q", footer, 40)[0] != MAGIC:
            raise ValueError("no table magic number at the end")
        _, pos = _varint(footer, 0)  # metaindex offset
        _, pos = _varint(footer, pos)  # metaindex size
        index_offset, pos = _varint(footer, pos)
        index_size, pos = _varint(footer, pos)
        index_block = _read_block(data, index_offset, index_size, "index")
        num_shards, entries = None, {}
        for _, handle in _block_entries(index_block):
            off, p = _varint(handle, 0)
            size, _ = _varint(handle, p)
            for key, value in _block_entries(_read_block(data, off, size, "data")):
                if key == b"":
                    header = {f: v for f, _, v in _proto_fields(value)}
                    num_shards = header.get(1, 0)
                    if header.get(2, 0) != 0:
                        raise ValueError("big-endian bundles are not supported")
                    continue
                name = key.decode("utf-8")
                entries[name] = _parse_entry(name, value)
        if num_shards is None:
            raise ValueError("no bundle header entry")
    except (ValueError, struct.error, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not a readable TensorFlow checkpoint index: {e}") from None
    return int(num_shards), entries


def checkpoint_prefix(path: str | os.PathLike) -> Path:
    """``ckpt-1``, ``ckpt-1.index``, a ``.data-*`` file, or a folder with a ``checkpoint`` file /
    one ``*.index`` -> the prefix ``.../ckpt-1``."""
    path = Path(path)
    if path.is_dir():
        state = path / "checkpoint"
        if state.is_file():
            for line in state.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.startswith("model_checkpoint_path:"):
                    name = line.split(":", 1)[1].strip().strip('"')
                    return path / name if not os.path.isabs(name) else Path(name)
        indexes = sorted(path.glob("*.index"))
        if len(indexes) == 1:
            return indexes[0].with_suffix("")
        raise CheckpointError(f"{path}: expected a TensorFlow checkpoint folder with one *.index file "
                              f"(found {len(indexes)}); pass the prefix, e.g. {path}/ckpt-500000")
    name = path.name
    if name.endswith(".index"):
        return path.with_name(name[: -len(".index")])
    if ".data-" in name:
        return path.with_name(name.split(".data-")[0])
    return path


class TensorBundle:
    """Read-only access to a TF checkpoint: ``names()``, ``entry(name)``, ``read(name)`` -> numpy.

    Args:
        path: the prefix (``.../ckpt-500000``), its ``.index`` file, or the checkpoint folder.
        verify_data: check each tensor's CRC32C: True always (slow without a crc32c package),
            None (default) only when a fast crc32c package is installed, False never.
    """

    def __init__(self, path: str | os.PathLike, verify_data: bool | None = None):
        self.prefix = checkpoint_prefix(path)
        index = Path(f"{self.prefix}.index")
        if not index.is_file():
            raise CheckpointError(f"TensorFlow checkpoint index not found: {index} (expected PREFIX.index "
                                  "next to PREFIX.data-00000-of-0000N)")
        self.num_shards, self.entries = read_index(index)
        self.verify_data = _fast_crc32c() is not None if verify_data is None else verify_data
        self._check_shards()

    def _check_shards(self) -> None:
        """Every data file exists and is long enough for the tensors the index puts in it."""
        need: dict[int, int] = {}
        for e in self.entries.values():
            if e.shard >= max(1, self.num_shards):
                raise CheckpointError(f"{self.prefix}.index names data shard {e.shard} of {self.num_shards} for {e.name}")
            need[e.shard] = max(need.get(e.shard, 0), e.offset + e.size)
        for shard, end in sorted(need.items()):
            path = self.shard_path(shard)
            if not path.is_file():
                raise CheckpointError(f"checkpoint data file not found: {path}")
            size = path.stat().st_size
            if size < end:
                raise CheckpointError(f"{path} is truncated: {size} bytes, but the index needs {end}")

    def names(self) -> list[str]:
        return sorted(self.entries)

    def entry(self, name: str) -> BundleEntry:
        return self.entries[name]

    def shard_path(self, shard: int) -> Path:
        return Path(f"{self.prefix}.data-{shard:05d}-of-{self.num_shards:05d}")

    def read(self, name: str) -> np.ndarray:
        """The tensor ``name`` as a numpy array (its own copy, native byte order)."""
        e = self.entries[name]
        if e.sliced:
            raise CheckpointError(f"{self.prefix}: tensor {name} is stored in slices (partitioned variables "
                                  "are not supported)")
        if e.dtype == DT_STRING:
            raise CheckpointError(f"{self.prefix}: tensor {name} is a string tensor; only numeric tensors are read")
        if e.dtype not in DTYPES and e.dtype != DT_BFLOAT16:
            raise CheckpointError(f"{self.prefix}: tensor {name} has unsupported dtype {e.dtype_name}")
        itemsize = 2 if e.dtype == DT_BFLOAT16 else DTYPES[e.dtype].itemsize
        count = int(np.prod(e.shape, dtype=np.int64)) if e.shape else 1
        if count * itemsize != e.size:
            raise CheckpointError(f"{self.prefix}: tensor {name} has {e.size} bytes, but {e.dtype_name}"
                                  f"{list(e.shape)} needs {count * itemsize}")
        shard = self.shard_path(e.shard)
        if not shard.is_file():
            raise CheckpointError(f"checkpoint data file not found: {shard}")
        with open(shard, "rb") as f:
            f.seek(e.offset)
            raw = f.read(e.size)
        if len(raw) != e.size:
            raise CheckpointError(f"{shard} is truncated: tensor {name} needs bytes {e.offset}..{e.offset + e.size} "
                                  f"but the file has {shard.stat().st_size}")
        if self.verify_data and e.crc is not None and mask_crc(crc32c(raw)) != e.crc:
            raise CheckpointError(f"{shard}: tensor {name} fails its CRC32C check (corrupt data file)")
        if e.dtype == DT_BFLOAT16:
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            return bits.view(np.float32).reshape(e.shape)
        return np.frombuffer(raw, dtype=DTYPES[e.dtype]).astype(DTYPES[e.dtype].newbyteorder("="), copy=True).reshape(e.shape)


# -- a minimal writer (tests, and for building small checkpoints without TensorFlow) ----------------
def _put_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(num: int, wire: int, payload: bytes | int) -> bytes:
    key = _put_varint(num << 3 | wire)
    if wire == 0:
        return key + _put_varint(int(payload))
    if wire == 5:
        return key + struct.pack("<I", int(payload))
    return key + _put_varint(len(payload)) + payload


def _block(items: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(_put_varint(0) + _put_varint(len(k)) + _put_varint(len(v)) + k + v for k, v in items)
    return body + struct.pack("<II", 0, 1)  # one restart point at offset 0


def write_bundle(prefix: str | os.PathLike, tensors: dict[str, np.ndarray]) -> None:
    """Write ``tensors`` as an uncompressed single-shard bundle ``prefix.index`` +
    ``prefix.data-00000-of-00001`` in the layout TensorFlow writes (used by the tests)."""
    codes = {v: k for k, v in DTYPES.items()}
    data, entries = bytearray(), []
    for name in sorted(tensors):
        arr = np.array(tensors[name], order="C")  # (ascontiguousarray would make scalars 1-D)
        code = codes[arr.dtype.newbyteorder("<") if arr.dtype.itemsize > 1 else arr.dtype]
        raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        shape = b"".join(_field(2, 2, _field(1, 0, d)) for d in arr.shape)
        entry = (_field(1, 0, code) + _field(2, 2, shape) + (_field(4, 0, len(data)) if data else b"")
                 + _field(5, 0, len(raw)) + _field(6, 5, mask_crc(crc32c(raw))))
        entries.append((name.encode(), entry))
        data += raw
    header = _field(1, 0, 1) + _field(3, 2, _field(1, 0, 1))  # num_shards 1, version {producer 1}
    block = _block([(b"", header)] + entries)
    out = bytearray()

    def add(contents: bytes) -> tuple[int, int]:
        off = len(out)
        out.extend(contents + b"\x00" + struct.pack("<I", mask_crc(crc32c(contents + b"\x00"))))
        return off, len(contents)

    d_off, d_size = add(block)
    last = entries[-1][0] if entries else b""
    m_off, m_size = add(_block([]))
    i_off, i_size = add(_block([(last, _put_varint(d_off) + _put_varint(d_size))]))
    footer = _put_varint(m_off) + _put_varint(m_size) + _put_varint(i_off) + _put_varint(i_size)
    out += footer + b"\x00" * (40 - len(footer)) + struct.pack("<Q", MAGIC)
    Path(f"{prefix}.data-00000-of-00001").write_bytes(bytes(data))
    Path(f"{prefix}.index").write_bytes(bytes(out))
