"""Read an image-folder data set: the generated one, or any user-supplied one.

Layout:

    <root>/<ClassName>/<anything>.jpg|.jpeg|.png

Class names are the folder names, sorted; nothing else about the classes is hard-coded.
"""

from __future__ import annotations

from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def list_images(root: str | Path) -> tuple[list[Path], list[int], list[str]]:
    """Find `<root>/<Class>/*.{jpg,jpeg,png}`; return (paths, label indices, class names).

    Sorted everywhere so the order (hence the split) never depends on the filesystem.
    """
    root = Path(root)
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    paths: list[Path] = []
    labels: list[int] = []
    class_names: list[str] = []
    for class_dir in class_dirs:
        files = sorted(
            f
            for f in class_dir.iterdir()
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")
        )
        if not files:
            continue
        label = len(class_names)
        class_names.append(class_dir.name)
        paths.extend(files)
        labels.extend([label] * len(files))
    if len(class_names) < 2:
        raise ValueError(f"{root}: need at least 2 class folders with images, found {class_names}")
    return paths, labels, class_names
