"""``python -m nscg.oci``: the ``nscg-oci`` command."""

from nscg.oci.cli import main

if __name__ == "__main__":
    main()
