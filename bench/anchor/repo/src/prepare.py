"""Stage prepare: a stratified split of data/raw/<Class>/*.jpg into train/ and val/ folders.

Usage: python src/prepare.py <raw-folder> <prepared-folder>
"""

import random
import shutil
import sys
from pathlib import Path

import yaml


def main(raw: Path, prepared: Path) -> None:
    params = yaml.safe_load(Path("params.yaml").read_text())["prepare"]
    rng = random.Random(params["seed"])
    shutil.rmtree(prepared, ignore_errors=True)
    for folder in sorted(p for p in raw.iterdir() if p.is_dir()):
        images = sorted(folder.glob("*.jpg"))
        rng.shuffle(images)
        held_out = round(len(images) * params["split"])
        for part, chosen in (("val", images[:held_out]), ("train", images[held_out:])):
            (prepared / part / folder.name).mkdir(parents=True)
            for image in chosen:
                shutil.copy2(image, prepared / part / folder.name / image.name)
    print(f"prepared {prepared}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
