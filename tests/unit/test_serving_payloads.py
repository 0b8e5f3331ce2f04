"""Serving without a server: payload parsing and refusals, the inference log's sampling, the model-file checks."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from ml_tasks.errors import ConfigError, UnsafePathError
from ml_tasks.release.model_loading import ModelLoadError, check_model_files
from ml_tasks.serving.batching import MicroBatcher
from ml_tasks.serving.config import ServeConfig
from ml_tasks.serving.inference_log import InferenceLog
from ml_tasks.serving.loading import LoadedModel
from ml_tasks.serving.payloads import INTEGER, NUMBER, STRING, Column, PayloadError, parse_csv, parse_json

MODEL = LoadedModel(name="m", version="3", alias="champion", run_id="r", loaded_at="t",
                    columns=(Column("age", INTEGER), Column("x", NUMBER), Column("city", STRING)), pyfunc=None)
WANT = {"age": [30, 41], "x": [0.5, None], "city": ["Oslo", None]}


def _parse(payload: object) -> tuple[dict[str, list[object]], int]:
    return parse_json(MODEL, json.dumps(payload).encode(), max_rows=10)


def test_every_json_format_gives_the_same_columns() -> None:
    records = [{"age": 30, "x": 0.5, "city": "Oslo"}, {"age": 41, "x": None, "city": None}]
    for payload in (
        {"dataframe_split": {"columns": ["city", "x", "age"], "data": [["Oslo", 0.5, 30], [None, None, 41]]}},
        {"dataframe_split": {"columns": ["age", "x", "city"], "data": [[30, 0.5, "Oslo"], [41, None, None]],
                             "index": [7, 8]}},
        {"dataframe_records": records},
        {"instances": records},
        {"inputs": records},
        {"inputs": {"age": [30, 41], "x": [0.5, None], "city": ["Oslo", None]}},
        {"instances": {"age": [30, 41], "x": [0.5, None], "city": ["Oslo", None]}, "params": {}},
    ):
        assert _parse(payload) == (WANT, 2), payload
    assert _parse({"inputs": {"age": 30, "x": 0.5, "city": "Oslo"}}) == ({"age": [30], "x": [0.5], "city": ["Oslo"]}, 1)
    csv = b"\xef\xbb\xbfcity,x,age\r\nOslo,0.5,30\r\n,,41\r\n"
    assert parse_csv(MODEL, csv, max_rows=10) == (WANT, 2)


@pytest.mark.parametrize(("payload", "status", "words"), [
    ({"dataframe_records": [{"age": 1.5, "x": 1, "city": "a"}]}, 422, "column 'age' row 0: expected an integer, got 1.5"),
    ({"dataframe_records": [{"age": 1, "x": "1", "city": "a"}]}, 422, "column 'x' row 0: expected a number or null, got string"),
    ({"dataframe_records": [{"age": 1, "x": 1, "city": 3}]}, 422, "column 'city' row 0: expected a string or null, got number"),
    ({"dataframe_records": [{"age": 1, "x": False, "city": "a"}]}, 422, "got boolean"),
    ({"dataframe_records": [{"age": 1, "x": {"a": 1}, "city": "a"}]}, 422, "got object"),
    ({"dataframe_records": [{"age": 1, "x": 1}]}, 400, "missing columns ['city']"),
    ({"dataframe_records": [{"age": 1, "x": 1, "city": "a", "zip": 1}]}, 400, "unknown columns ['zip']"),
    ({"dataframe_records": [{"age": 1, "x": 1, "city": "a"}] * 11}, 413, "at most 10"),
    ({"dataframe_split": {"columns": ["age", "x", "city"]}}, 400, "takes 'columns', 'data'"),
    ({"dataframe_split": {"columns": ["age", "x", "city"], "data": [[1, 2, "a"]], "index": [1, 2]}}, 400, "'index'"),
    ({"dataframe_split": [[1, 2, "a"]]}, 400, "must be an object"),
    ({"inputs": {"age": [1], "x": 1, "city": ["a"]}}, 400, "every column a list"),
    ({"inputs": {"age": [1, 2], "x": [1], "city": ["a"]}}, 400, "different lengths"),
    ({"inputs": 5}, 400, "list of row objects or an object of columns"),
    ({"params": {}}, 400, "exactly one of"),
])
def test_refusals_name_the_problem(payload: object, status: int, words: str) -> None:
    with pytest.raises(PayloadError) as caught:
        _parse(payload)
    assert caught.value.status == status and words in caught.value.message, caught.value.message


def test_json_and_csv_refuse_non_finite_numbers_and_bad_text() -> None:
    for body in (b'{"inputs": {"age": [1], "x": [Infinity], "city": ["a"]}}',
                 b'{"inputs": {"age": [1e999], "x": [1], "city": ["a"]}}'):
        with pytest.raises(PayloadError, match="finite"):
            parse_json(MODEL, body, 10)
    with pytest.raises(PayloadError, match="not valid JSON"):
        parse_json(MODEL, b'{"inputs": {"age": [' + b"9" * 5000 + b'], "x": [1], "city": ["a"]}}', 10)
    with pytest.raises(PayloadError, match="beyond 64 bits"):
        MODEL.frame({"age": [2**70], "x": [1.0], "city": ["a"]})
    with pytest.raises(PayloadError, match="deeply"):
        parse_json(MODEL, b"[" * 100_000 + b"]" * 100_000, 10)
    with pytest.raises(PayloadError, match="column 'x' row 1: expected a number"):
        parse_csv(MODEL, b"age,x,city\n1,2,a\n1,two,b\n", 10)
    with pytest.raises(PayloadError, match="not a finite number"):
        parse_csv(MODEL, b"age,x,city\n1,nan,a\n", 10)
    with pytest.raises(PayloadError, match="row 0: 2 fields"):
        parse_csv(MODEL, b"age,x,city\n1,2\n", 10)


def _logged(root: Path) -> list[dict[str, object]]:
    return [json.loads(line) for path in sorted(root.rglob("*.jsonl")) for line in path.read_text().splitlines()]


def test_inference_log_sampling(tmp_path: Path) -> None:
    columns = {"age": list(range(1000)), "x": [0.5] * 1000, "city": ["Oslo"] * 1000}
    probability, prediction = [0.25] * 1000, [0] * 1000
    for sample, folder in ((0.0, "none"), (0.2, "some"), (1.0, "all")):
        log = InferenceLog(tmp_path / folder, "m", sample, seed=1)
        for i in range(5):
            log.submit(f"req-{i}", "3", columns, 1000, probability, prediction)
        log.close()
    assert not (tmp_path / "none").exists()
    every = _logged(tmp_path / "all")
    assert len(every) == 5000 and every[0]["inputs"] == {"age": 0, "x": 0.5, "city": "Oslo"}
    assert set(every[0]) == {"ts", "request_id", "model", "version", "inputs", "probability", "prediction"}
    some = _logged(tmp_path / "some")
    assert 800 < len(some) < 1200  # 20% of 5,000 rows
    files = list((tmp_path / "all" / "m").glob("date=*/part-*.jsonl"))
    assert len(files) == 1  # one file per process per day


def test_inference_log_lines_are_the_json_of_each_row(tmp_path: Path) -> None:
    columns = {"age": [30, None, 2**40], "x": [0.1, -1e-300, 1e300], "city": ['Os"lo\n', None, "Zürich"]}
    log = InferenceLog(tmp_path, "m", 1.0)
    log.submit("r-1", "3", columns, 3, [0.125, 1.0, 0.0], [0, 1, 0])
    log.close()
    rows = _logged(tmp_path)
    assert [row["inputs"] for row in rows] == [{name: values[i] for name, values in columns.items()} for i in range(3)]
    assert [(row["probability"], row["prediction"]) for row in rows] == [(0.125, 0), (1.0, 1), (0.0, 0)]
    assert {row["request_id"] for row in rows} == {"r-1"} and {row["version"] for row in rows} == {"3"}


class Doubling:
    """A stand-in model for the batcher: probability = x / 10; x < 0 is refused, naming its row."""

    column_names = ("x",)

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict(self, columns: dict[str, list[float]], n_rows: int) -> tuple[list[float], list[int]]:
        self.calls.append(n_rows)
        for row, x in enumerate(columns["x"]):
            if x < 0:
                raise PayloadError(422, f"row {row} is negative")
        return [x / 10 for x in columns["x"]], [int(x >= 5) for x in columns["x"]]


def test_requests_that_arrive_together_are_scored_in_one_batch() -> None:
    import asyncio

    model = Doubling()

    async def scenario() -> list[object]:
        batcher = MicroBatcher()
        together = [batcher.submit(model, {"x": xs}, len(xs)) for xs in ([1.0], [2.0, 7.0], [3.0])]  # type: ignore[arg-type]
        answers: list[object] = list(await asyncio.gather(*together))
        with_bad = [batcher.submit(model, {"x": xs}, 1) for xs in ([4.0], [-1.0])]  # type: ignore[arg-type]
        answers += await asyncio.gather(*with_bad, return_exceptions=True)
        answers.append(await batcher.submit(model, {"x": [9.0]}, 1))  # type: ignore[arg-type]
        return answers

    answers = asyncio.run(scenario())
    assert answers[:3] == [([0.1], [0]), ([0.2, 0.7], [0, 1]), ([0.3], [0])]
    assert answers[3] == ([0.4], [0])
    assert isinstance(answers[4], PayloadError) and "row 0 is negative" in answers[4].message  # its own row, not the batch's
    assert answers[5] == ([0.9], [1])
    assert model.calls == [4, 2, 1, 1, 1]  # one batch of 4 rows; a failed batch of 2 retried alone; a lone request


def test_config_refuses_unsafe_names_and_bad_fractions() -> None:
    with pytest.raises(UnsafePathError):
        ServeConfig(model="../etc")
    with pytest.raises(UnsafePathError):
        ServeConfig(model="m", alias="champion/../x")
    with pytest.raises(ConfigError, match="fraction"):
        ServeConfig(model="m", log_sample=1.5)
    config = ServeConfig(model="m", log_sample=0.25, workers=2)
    assert ServeConfig.from_json(config.to_json()) == config


def test_config_limits_come_from_the_environment_or_the_declared_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    from argparse import Namespace

    from ml_tasks import environment_variables as env
    from ml_tasks.serving.config import config_from_args, config_from_environment, pass_to_workers

    args = Namespace(model="m", alias="champion", host="127.0.0.1", port=0, poll_seconds=1, log_sample=None, workers=2)
    variables = (env.RATCHET_SERVE_MAX_ROWS, env.RATCHET_SERVE_MAX_BODY_BYTES, env.RATCHET_INFERENCE_LOG_SAMPLE,
                 env.RATCHET_SERVE_EXPLAIN_MAX_ROWS)
    for variable in variables:
        monkeypatch.delenv(variable.name, raising=False)
    config = config_from_args(args)
    assert (config.max_rows, config.max_body_bytes, config.log_sample, config.explain_max_rows) == tuple(
        variable.default for variable in variables)
    assert config == ServeConfig(model="m", port=0, poll_seconds=1, workers=2)  # one default per knob
    monkeypatch.setenv("RATCHET_SERVE_MAX_ROWS", "25")
    monkeypatch.setenv("RATCHET_SERVE_MAX_BODY_BYTES", "4096")
    monkeypatch.setenv("RATCHET_INFERENCE_LOG_SAMPLE", "0.5")
    monkeypatch.setenv("RATCHET_SERVE_EXPLAIN_MAX_ROWS", "7")
    config = config_from_args(args)
    assert (config.max_rows, config.max_body_bytes, config.log_sample, config.explain_max_rows) == (25, 4096, 0.5, 7)
    with pytest.raises(ConfigError, match="explain max rows"):
        ServeConfig(model="m", explain_max_rows=0)
    assert config_from_args(Namespace(**{**vars(args), "log_sample": 0.1})).log_sample == 0.1  # the flag wins
    monkeypatch.setenv("RATCHET_SERVE_MAX_ROWS", "many")
    with pytest.raises(ConfigError, match="RATCHET_SERVE_MAX_ROWS"):
        config_from_args(args)
    monkeypatch.delenv("RATCHET_SERVE_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="RATCHET_SERVE_CONFIG is not set"):
        config_from_environment()
    pass_to_workers(config)  # os.environ is restored by monkeypatch, which has seen the variable
    assert config_from_environment() == config


class Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this would run on load",))


def _model_folder(tmp_path: Path, loader: str, pickled: bytes | None) -> Path:
    folder = tmp_path / f"model-{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    flavor = {"loader_module": loader, "python_model": "python_model.pkl", "code": None}
    (folder / "MLmodel").write_text(json.dumps({"flavors": {"python_function": flavor}}))  # JSON is YAML
    if pickled is not None:
        (folder / "python_model.pkl").write_bytes(pickled)
    return folder


def test_only_our_pyfunc_is_loaded(tmp_path: Path) -> None:
    from ml_tasks.release.pyfunc import RatchetClassifier

    check_model_files(_model_folder(tmp_path, "mlflow.pyfunc.model", pickle.dumps(RatchetClassifier())))
    check_model_files(_model_folder(tmp_path, "ml_tasks.compression", None))
    with pytest.raises(ModelLoadError, match="builtins.print"):
        check_model_files(_model_folder(tmp_path, "mlflow.pyfunc.model", pickle.dumps(Evil())))
    with pytest.raises(ModelLoadError, match="loader"):
        check_model_files(_model_folder(tmp_path, "mlflow.sklearn", None))
