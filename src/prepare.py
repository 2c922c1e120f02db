"""Stage `prepare`: image folder -> stratified split of resized arrays in `data/prepared/`.

Usage: python src/prepare.py <raw_dir> <prepared_dir>
Works on any `<raw_dir>/<Class>/*.jpg|png` folder (class names = folder names, sorted).
"""

import sys

from celestial.determinism import pin_numerics

pin_numerics()

from celestial.params import load_params  # noqa: E402
from celestial.preparation import prepare_dataset  # noqa: E402


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: python src/prepare.py <raw_dir> <prepared_dir>")
    params = load_params(section="prepare")
    info = prepare_dataset(
        sys.argv[1],
        sys.argv[2],
        params["image_size"],
        params["grayscale"],
        params["split"],
        params["seed"],
    )
    size = info["image_size"]
    print(
        f"prepare: {info['n_train']} train / {info['n_test']} test, "
        f"{len(info['class_names'])} classes, {size[0]}x{size[1]} "
        f"{'gray' if info['grayscale'] else 'RGB'}"
    )


if __name__ == "__main__":
    main()
