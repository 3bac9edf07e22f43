"""What a run shows while it trains: a tqdm bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys


class EpochDisplay:
    """Per-epoch progress: a tqdm bar on a terminal, plain lines otherwise, nothing if quiet."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.bar = None

    def start(self, epoch: int, epochs: int, steps: int) -> None:
        """Begin an epoch."""
        if not self.quiet and self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=steps, desc=f"epoch {epoch}/{epochs}", unit="step", leave=True)

    def update(self, n: int, loss: float | None = None, acc: float | None = None) -> None:
        """Advance by ``n`` steps, showing the running loss and accuracy when given."""
        if self.bar is not None:
            if loss is not None:
                self.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.4f}", refresh=False)
            self.bar.update(n)

    def close(self) -> None:
        """Close the bar of an epoch that will not finish."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def end(self, row: dict, epochs: int) -> None:
        """Finish an epoch with its summary line."""
        line = (
            f"epoch {int(row['epoch'])}/{epochs}: loss {row['train_loss']:.4f} "
            f"acc {row['train_accuracy']:.4f} | val_loss {row['val_loss']:.4f} "
            f"val_acc {row['val_accuracy']:.4f} | {row['seconds']:.1f}s"
        )
        if self.bar is not None:
            self.bar.set_postfix_str(f"val_acc {row['val_accuracy']:.4f}")
            self.bar.close()
            self.bar = None
        if not self.quiet:
            print(line, file=sys.stderr, flush=True)
