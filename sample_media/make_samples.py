"""Build the sample media into sample_media/build (see README.md here)."""

from ferpipe.samples import build_samples

if __name__ == "__main__":
    for name, path in build_samples().items():
        print(f"{name}: {path}")
