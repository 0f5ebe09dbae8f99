"""Validates the API's documents with real validators.

Usage: validate.py OPENAPI.json ASYNCAPI.json

OpenAPI 3.1 with openapi-spec-validator (PyPI); AsyncAPI 3.0 against the official JSON
Schema from @asyncapi/specs (npm), fetched once into target/tools/ with `npm pack`, with
jsonschema (PyPI). The test command installs the Python packages and npm when missing.
"""

import json
import pathlib
import subprocess
import sys
import tarfile

import jsonschema
from openapi_spec_validator import validate

SPECS = "@asyncapi/specs@6.11.1"
ROOT = pathlib.Path(__file__).resolve().parents[2]
TOOLS = ROOT / "target" / "tools" / "asyncapi-specs-6.11.1"
SCHEMA = TOOLS / "package" / "schemas" / "3.0.0-without-$id.json"


def asyncapi_schema():
    if not SCHEMA.exists():
        TOOLS.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(["npm", "pack", SPECS, "--silent"], cwd=TOOLS, check=True,
                             capture_output=True, text=True).stdout.split()[-1]
        with tarfile.open(TOOLS / out) as tar:
            tar.extractall(TOOLS, filter="data")
    return json.loads(SCHEMA.read_text())


def main():
    openapi = json.loads(pathlib.Path(sys.argv[1]).read_text())
    asyncapi = json.loads(pathlib.Path(sys.argv[2]).read_text())
    if not openapi.get("openapi", "").startswith("3.1"):
        sys.exit(f"not OpenAPI 3.1: {openapi.get('openapi')}")
    validate(openapi)
    validator = jsonschema.Draft7Validator(asyncapi_schema())
    errors = sorted(validator.iter_errors(asyncapi), key=lambda e: list(e.path))
    if errors:
        for e in errors[:20]:
            print(f"asyncapi: {list(e.path)}: {e.message[:300]}", file=sys.stderr)
        sys.exit(f"{len(errors)} AsyncAPI schema errors")
    print("ok")


if __name__ == "__main__":
    main()
