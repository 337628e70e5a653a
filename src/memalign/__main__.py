"""``python -m memalign`` runs the CLI, so scripts can call it through ``sys.executable`` and never
depend on which ``memalign`` happens to be first on PATH."""

from memalign.cli import main

if __name__ == "__main__":
    main()
