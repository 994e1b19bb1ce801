"""``python -m squeeze_cli ...``: the same as the ``squeeze`` command (and what
``torchrun --nproc-per-node N -m squeeze_cli train ...`` launches)."""

from squeeze_cli.app import run

if __name__ == "__main__":
    run()
