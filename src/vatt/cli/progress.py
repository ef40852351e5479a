"""Progress bars of the ``vatt`` command (tqdm): the library reports through the
:mod:`vatt.progress` convention and never draws bars itself."""

from __future__ import annotations

from typing import Any


class Bars:
    """A :data:`vatt.progress.Progress` callable drawing one tqdm bar per phase (``desc=`` starts
    a new phase). The bar appears with the first report, so a command that fails while setting up
    prints its one error line and no empty bar."""

    def __init__(self, leave: bool = False):
        self.leave, self._bar = leave, None

    def __call__(self, n: int = 1, *, total: int | None = None, desc: str | None = None, unit: str | None = None,
                 **info: Any) -> None:
        from tqdm import tqdm

        if desc is not None or self._bar is None:
            self.close()
            self._bar = tqdm(total=total, desc=desc or "", unit=unit or "item", leave=self.leave, dynamic_ncols=True)
        elif total is not None:
            self._bar.total = total
            self._bar.refresh()
        if info:
            self._bar.set_postfix_str(" ".join(f"{k} {v}" for k, v in info.items()), refresh=False)
        if n:
            self._bar.update(n)

    def write(self, message: str) -> None:
        from tqdm import tqdm

        tqdm.write(message)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


EVAL_SHOWN = ("eval/top1", "eval/top5", "eval/mAP", "eval/AUC")


class TrainingBar:
    """A tqdm bar fed by the training engine's per-step metrics callback (rank 0 only; pretraining
    and fine-tuning); it appears with the first step (a resumed run starts at its step)."""

    def __init__(self, total: int, desc: str = "pretrain"):
        self.total, self.desc = total, desc
        self._bar = None
        self.started = False

    @property
    def bar(self):
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=self.desc, unit="step", dynamic_ncols=True)
        return self._bar

    def __call__(self, m: dict) -> None:
        if "eval" in m:
            r1 = [v for k, v in m["eval"].items() if k.endswith("text_to_video/R@1")]
            if r1:
                self.bar.write(f"step {m['step']}: zero-shot text->video R@1 = {r1[0]:.3f}")
            shown = {k[len("eval/"):]: v for k, v in m["eval"].items() if k in EVAL_SHOWN}
            if shown:  # fine-tuning's multi-view test
                self.bar.write(f"step {m['step']}: validation " + ", ".join(f"{k} {v:.3f}" for k, v in shown.items()))
            return
        if not self.started:
            self.bar.n = self.bar.last_print_n = m["step"] - 1
            self.bar.start_t = self.bar._time()
            self.started = True
        mfu = f" MFU {100 * m['mfu']:.1f}%" if m.get("mfu") else ""
        parts = f" (va {m['loss_va']:.3f}, vt {m['loss_vt']:.3f})" if "loss_va" in m else ""
        self.bar.set_postfix_str(
            f"loss {m['loss']:.3f}{parts} lr {m['lr']:.2e} "
            f"{m['clips_per_second']:.1f} clips/s{mfu} wait {100 * m['data_wait']:.0f}%"
            + (f" skipped {m['skipped_total']}" if m.get("skipped_total") else ""),
            refresh=False,
        )
        self.bar.update(m["step"] - self.bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
