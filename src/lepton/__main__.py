"""``python -m lepton`` is the ``lepton`` command."""

from lepton.cli import main

if __name__ == "__main__":
    main()
