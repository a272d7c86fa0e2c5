"""``python -m untrac.paper``: the paper's results from the command line.

    python -m untrac.paper TARGET [--scale …] [--launcher …] [--out …] [--fresh] [-- overrides]   (targets)
    python -m untrac.paper aggregate SWEEP [SWEEP ...] [--target …] [--out …] [--name …] [--split]
    python -m untrac.paper train-models -m plan.file=PLAN plan.index=range(0,N)   (one job per planned model)
"""

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else ""
    if command == "train-models":
        from untrac.paper.plan import train_models_main

        sys.argv = [sys.argv[0], *argv[1:]]  # Hydra reads its overrides from sys.argv
        train_models_main()
        return 0
    from untrac.errors import UntracError
    from untrac.paper.plan import one_line_errors

    try:
        with one_line_errors():  # Hydra's and OmegaConf's errors become UntracError
            if command == "aggregate":
                from untrac.paper.aggregate import main as aggregate

                return aggregate(argv[1:])
            from untrac.paper.targets import main as driver

            return driver(argv)
    except UntracError as err:  # a bad override or sweep: one line, exit 1
        print(f"untrac.paper: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
