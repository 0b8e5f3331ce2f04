"""Preparation: our `prepare` stage against the same work hand-written in pandas.

Both read the same drop, drop duplicates and missing targets, split 70/15/15
stratified, standardise numerics and one-hot the categoricals fitted on train,
and write train/val/test Parquet. Ours also writes the raw test rows, the
transform and the fingerprint, and checks every input: the target allows for it.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import bench_line, best_of

ROWS = int(os.environ.get("BENCH_PREPARATION_ROWS", "300000"))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["RATCHET_HOME"] = str(Path(tmp) / "home")
        import pandas as pd
        from sklearn.model_selection import train_test_split

        from ml_tasks.config import RunContext
        from ml_tasks.datasets import SYNTHETIC, synthetic
        from ml_tasks.preparation import prepare

        drop = Path(tmp) / "drop"
        drop.mkdir()
        synthetic.generate(ROWS, seed=1).to_parquet(drop / "part-000.parquet", index=False)
        ctx = RunContext("synthetic", "bench")

        def ours() -> None:
            prepare(ctx, drop.as_uri())

        def hand_written() -> None:
            frame = pd.read_parquet(drop / "part-000.parquet").drop_duplicates()
            frame = frame[frame[SYNTHETIC.target].notna()]
            train, rest = train_test_split(frame, test_size=0.3, stratify=frame[SYNTHETIC.target], random_state=0)
            val, test = train_test_split(rest, test_size=0.5, stratify=rest[SYNTHETIC.target], random_state=0)
            numeric = list(SYNTHETIC.numeric_features)
            mean, std = train[numeric].mean(), train[numeric].std(ddof=0)
            out = Path(tmp) / "hand"
            out.mkdir(exist_ok=True)
            columns = None
            for name, part in (("train", train), ("val", val), ("test", test)):
                encoded = pd.get_dummies(part[list(SYNTHETIC.categorical_features)], dtype="float32")
                if columns is None:
                    columns = list(encoded.columns)
                encoded = encoded.reindex(columns=columns, fill_value=0.0)
                matrix = pd.concat([((part[numeric] - mean) / std).astype("float32"), encoded], axis=1)
                matrix[SYNTHETIC.target] = part[SYNTHETIC.target].to_numpy()
                matrix.to_parquet(out / f"{name}.parquet", index=False)

        ours()  # warm imports and caches for both
        hand_written()
        ours_s = best_of(ours)
        reference_s = best_of(hand_written)
        bench_line(f"preparation.prepare_{ROWS}_rows", ours_s, reference_s, target=0.5)


if __name__ == "__main__":
    main()
