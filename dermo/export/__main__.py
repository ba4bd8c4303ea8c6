"""python -m dermo.export --run RUN --format savedmodel|tflite|onnx ...: see dermo.export.cli."""
import sys

from dermo.export.cli import main

if __name__ == "__main__":
    sys.exit(main())
