"""`citywok`: thin commands over the core and the pipeline."""

import click


@click.group()
def main() -> None:
    """CityWok: index TV episodes and find which one a clip comes from."""


if __name__ == "__main__":
    main()
