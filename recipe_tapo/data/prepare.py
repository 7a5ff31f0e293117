"""Download (or read) a dataset, convert it to verl rows and write a parquet file.

    python -m recipe_tapo.data.prepare --source deepscaler --out data/deepscaler_train.parquet
    python -m recipe_tapo.data.prepare --source aime2024 --local AIME_2024.jsonl --out aime2024.parquet
    python -m recipe_tapo.data.prepare --source all --out-dir ~/data/tapo [--limit N]

Sources: see `recipe_tapo.data.sources.SOURCES`. Without --local a source is loaded from the Hugging
Face hub with `datasets.load_dataset`; --local takes a .parquet, .jsonl or .json file (a list of
records) or a folder written by `Dataset.save_to_disk`. Under --out-dir, training sources are
written to `<source>_train.parquet` and benchmarks to `<source>.parquet`. Skipped records are
counted per reason and printed; a source that yields no row fails the command (exit status 1).
"""

import argparse
import json
import os
import sys
from collections.abc import Iterator

from recipe_tapo.data.convert import Conversion, LabelledRecord, convert_records
from recipe_tapo.data.sources import SOURCES, SourceSpec


def _local_records(path: str, hub_split: str) -> list[dict]:
    if os.path.isdir(path):
        import datasets

        loaded = datasets.load_from_disk(path)
        if isinstance(loaded, datasets.DatasetDict):
            if hub_split in loaded:
                loaded = loaded[hub_split]
            elif len(loaded) == 1:
                loaded = next(iter(loaded.values()))
            else:
                raise ValueError(f"{path} holds splits {sorted(loaded)}; expected {hub_split!r}")
        return loaded.to_list()
    if path.endswith(".parquet"):
        import pyarrow.parquet

        return pyarrow.parquet.read_table(path).to_pylist()
    if path.endswith(".jsonl"):
        with open(path, encoding="utf-8") as lines:
            return [json.loads(line) for line in lines if line.strip()]
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as file:
            records = json.load(file)
        if not isinstance(records, list):
            raise ValueError(f"{path}: expected a JSON list of records")
        return records
    raise ValueError(f"{path}: expected a .parquet, .jsonl or .json file or a save_to_disk folder")


def load_records(spec: SourceSpec, local_path: str | None = None) -> Iterator[LabelledRecord]:
    """(subset, row number, record) for every record of the source, lazily for hub datasets."""
    if local_path is not None:
        for row_number, record in enumerate(_local_records(local_path, spec.hub_split)):
            yield None, row_number, record
        return
    import datasets

    for subset in spec.hub_subsets:
        dataset = datasets.load_dataset(spec.hub_id, name=subset, split=spec.hub_split)
        for row_number, record in enumerate(dataset):
            yield subset, row_number, record


def write_parquet(rows: list[dict], path: str) -> None:
    """Write atomically, so that an interrupted run never leaves a truncated file to train on."""
    import pandas

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial_path = path + ".partial"
    pandas.DataFrame(rows).to_parquet(partial_path, index=False)
    os.replace(partial_path, path)


def default_file_name(spec: SourceSpec) -> str:
    """`deepscaler_train.parquet` for training sources, `aime2024.parquet` for benchmarks."""
    return f"{spec.name}_train.parquet" if spec.split == "train" else f"{spec.name}.parquet"


def prepare_source(
    spec: SourceSpec, out_path: str, local_path: str | None = None, limit: int | None = None
) -> Conversion:
    """Load, convert and write one source; prints its summary. Writes nothing if no row is kept."""
    conversion = convert_records(spec, load_records(spec, local_path), limit=limit)
    print(conversion.summary(spec.name), flush=True)
    if conversion.rows:
        write_parquet(conversion.rows, out_path)
        print(f"  -> {out_path}", flush=True)
    else:
        print(
            f"  no usable rows: problem from {spec.problem_fields}, answer from {spec.answer_fields}; "
            f"columns of the first record: {conversion.first_record_columns}",
            file=sys.stderr,
            flush=True,
        )
    return conversion


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, choices=[*SOURCES, "all"])
    parser.add_argument("--out", help="output parquet file (one source)")
    parser.add_argument("--out-dir", help="output folder (<source>_train.parquet, or <source>.parquet for benchmarks)")
    parser.add_argument("--local", help="read this file or save_to_disk folder instead of the hub (one source)")
    parser.add_argument("--limit", type=int, help="keep at most this many rows per source")
    args = parser.parse_args(argv)

    specs = list(SOURCES.values()) if args.source == "all" else [SOURCES[args.source]]
    if args.source == "all" and (args.out or args.local):
        parser.error("--source all takes --out-dir, not --out or --local")
    if bool(args.out) == bool(args.out_dir):
        parser.error("give exactly one of --out and --out-dir")

    failed = []
    for spec in specs:
        out_path = args.out or os.path.join(args.out_dir, default_file_name(spec))
        if not prepare_source(spec, out_path, local_path=args.local, limit=args.limit).rows:
            failed.append(spec.name)
    if failed:
        print(f"no rows for: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
