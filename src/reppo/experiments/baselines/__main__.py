"""`python -m reppo.experiments.baselines FLAGS`: the same as `reppo baseline FLAGS`."""

if __name__ == "__main__":
    import sys

    from reppo.cli import main

    sys.exit(main(["baseline", *sys.argv[1:]]))
