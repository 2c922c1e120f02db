"""Stage `generate`: render the default synthetic data set into an image folder.

Usage: python src/generate.py <out_dir>      (count, size and seed come from params.yaml)
"""

import sys

from celestial.determinism import pin_numerics

pin_numerics()  # before numpy is imported anywhere

from celestial.params import load_params  # noqa: E402
from celestial.rendering import generate_dataset  # noqa: E402


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python src/generate.py <out_dir>")
    params = load_params(section="generate")
    paths = generate_dataset(
        sys.argv[1],
        images_per_class=int(params["images_per_class"]),
        image_size=int(params["image_size"]),
        seed=int(params["seed"]),
    )
    print(f"generate: wrote {len(paths)} images to {sys.argv[1]}")


if __name__ == "__main__":
    main()
