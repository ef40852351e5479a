"""``vatt index`` and ``vatt serve``: argument parsing, the progress bar and the start-up lines;
the work is in :mod:`vatt.search`."""

from __future__ import annotations

import logging
from pathlib import Path

from .args import port, positive_float, positive_int


def _index(args) -> int:
    from ..model import load_model
    from ..search.window_index import build_index
    from .progress import Bars

    model = load_model(args.model, device=args.device)
    bars = Bars(leave=True)
    try:
        stats = build_index(args.src, model, args.out, model_path=str(Path(args.model).resolve()), window=args.window,
                            hop=args.hop, batch_size=args.batch_size, device=args.device, roots=args.root,
                            progress=bars)
    finally:
        bars.close()
    print(f"{stats['files']} files, {stats['windows']} windows -> {args.out} "
          f"({stats['embedded']} embedded, {stats['reused']} unchanged, {stats['removed']} removed)")
    if stats["bad"]:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(stats["reasons"].items()))
        print(f"{stats['bad']} files skipped: {reasons} (listed under 'bad' in {Path(args.out) / 'index.json'})")
    print(f"serve it: vatt serve {args.out}")
    return 0


def _serve(args) -> int:
    from ..model import load_model
    from ..search.engine import SearchEngine
    from ..search.window_index import load_index
    from ..search.server import make_server

    import torch

    # Query batches are small: on 2 shared cores one intra-op thread embedded 20 sentences in 12 ms
    # where two took 83 ms (the threads wait on each other when other work holds a core).
    torch.set_num_threads(args.threads)
    index = load_index(args.index)
    model_dir = args.model or index.meta.get("model")
    model = None
    if model_dir and Path(model_dir).exists():
        model = load_model(model_dir, device="cpu")
    else:
        logging.getLogger(__name__).warning(
            "model %s not found: only 'more like this' works (give --model DIR for text and audio search)", model_dir)
    engine = SearchEngine(index, model, use_faiss=args.faiss)
    server = make_server(engine, args.host, args.port, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024))
    host = server.server_address[0]
    shown = f"[{host}]" if ":" in host else host
    print(f"{len(index.files)} files, {index.num_windows} windows; open http://{shown}:{server.server_port}/  "
          "(Ctrl-C stops)", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: anyone who can reach this machine can search and play the "
              "indexed files", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def register(sub) -> None:
    p = sub.add_parser("index", help="cut videos into windows and embed them for `vatt serve` (incremental)")
    p.add_argument("src", help="a folder of videos or a CSV/JSON manifest")
    p.add_argument("--model", required=True, help="model directory (save_pretrained) or run directory")
    p.add_argument("--out", required=True, help="index folder (re-running updates it)")
    p.add_argument("--window", type=positive_float, default=None, help="window length, seconds (default: the model's clip)")
    p.add_argument("--hop", type=positive_float, default=None, help="seconds between window starts (default: half a window)")
    p.add_argument("--root", action="append", default=None, metavar="DIR",
                   help="another folder the indexed files may live in (a manifest's folder is one already)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="windows per forward (default: 8)")
    p.set_defaults(func=_index)

    p = sub.add_parser("serve", help="search an index in the browser: text, 'more like this' and sound queries")
    p.add_argument("index", help="index folder written by `vatt index`")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=port, default=8000, help="port (default: 8000; 0 picks a free one)")
    p.add_argument("--model", default=None, help="model for text/audio queries (default: the one that built the index)")
    p.add_argument("--max-upload-mb", type=positive_float, default=20.0, help="largest audio upload, MB (default: 20)")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch threads for query embedding (default: 1; more helps large models on idle cores)")
    p.add_argument("--faiss", action="store_true", default=None,
                   help="search with FAISS (default: when installed and the index has 100k+ windows)")
    p.set_defaults(func=_serve)
