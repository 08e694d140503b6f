"""End-to-end demo on the bundled synthetic data (not yet implemented)."""


def main(argv=None):
    print("make demo: not yet")


if __name__ == "__main__":
    main()
