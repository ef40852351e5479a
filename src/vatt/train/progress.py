"""The training progress bar (tqdm), shared by ``vatt pretrain`` and ``vatt demo``."""

from __future__ import annotations


class ProgressBar:
    """A tqdm bar fed by the trainer's per-step callback (rank 0 only). It appears with the first
    report, so a run that fails while setting up prints its one error line and no empty bar."""

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
            return
        if not self.started:
            self.bar.n = self.bar.last_print_n = m["step"] - 1
            self.bar.start_t = self.bar._time()
            self.started = True
        self.bar.set_postfix_str(
            f"loss {m['loss']:.3f} (va {m['loss_va']:.3f}, vt {m['loss_vt']:.3f}) lr {m['lr']:.2e} "
            f"{m['clips_per_second']:.1f} clips/s wait {100 * m['data_wait']:.0f}%"
            + (f" skipped {m['skipped_total']}" if m.get("skipped_total") else ""),
            refresh=False,
        )
        self.bar.update(m["step"] - self.bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
