"""``python -m prefect_memory.cli``: the ``prefect-memory`` command."""

from . import main

if __name__ == "__main__":
    main()
