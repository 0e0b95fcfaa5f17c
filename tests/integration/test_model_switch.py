"""A live switch between two real models (SmolLM2 → gemma-3-270m) under concurrent load, in-process:
requests in flight finish on the old model, new ones go to the new model, none fail, and the old
model's scheduler is stopped once drained."""

import asyncio
import time
from pathlib import Path

from edge_agent.api.schema import Limits, parse_completion
from edge_agent.engines.llama import LlamaBackend
from edge_agent.metrics import AgentMetrics
from edge_agent.models import resolve_model
from edge_agent.scheduler import Scheduler
from edge_agent.service import InferenceService, ServingModel


def _serving(name: str, data_dir: Path) -> ServingModel:
    backend = LlamaBackend(resolve_model(name, "", data_dir), n_ctx=256, n_parallel=4, n_batch=64)
    scheduler = Scheduler(backend, max_queue=64)
    scheduler.start()
    return ServingModel(backend, scheduler, name)


def test_switch_under_load_loses_no_request(tmp_path):
    old = _serving("smollm2-135m-instruct", tmp_path)
    new = _serving("gemma-3-270m", tmp_path)
    service = InferenceService(
        old,
        None,
        AgentMetrics(lambda: {}, lambda: service.current.scheduler.stats(), lambda: None),
        request_timeout_s=120,
    )
    results: list[tuple[float, float, str]] = []  # (started, finished, model that answered)
    errors: list[BaseException] = []

    async def client(i: int, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            model_id = service.model_id
            params = parse_completion(
                {"model": model_id, "prompt": f"Story {i}.{n}:", "max_tokens": 6, "temperature": 0.7, "seed": n},
                Limits(256, (model_id,)),
            )
            started = time.monotonic()
            try:
                answer = await service.generate(params, "no-store", started)
                results.append((started, time.monotonic(), answer.body.decode()))
            except BaseException as exc:  # noqa: BLE001 - every failure is a defect here
                errors.append(exc)
                return
            n += 1

    async def until(condition, timeout_s: float) -> None:
        """Poll until condition() holds or a client failed; a busy machine may take a while."""
        deadline = time.monotonic() + timeout_s
        while not (condition() or errors) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    async def scenario() -> float:
        await service.warm_up()
        stop = asyncio.Event()
        clients = [asyncio.create_task(client(i, stop)) for i in range(6)]
        # Switch under load: once the old model has answered a few.
        await until(lambda: len(results) >= 3, 300)
        await service.switch_to(new, drain_timeout_s=300)
        switched_at = time.monotonic()
        # Run on until the new model has answered a few.
        await until(lambda: sum(1 for started, _, _ in results if started >= switched_at) >= 3, 300)
        stop.set()
        await asyncio.gather(*clients)
        return switched_at

    try:
        switched_at = asyncio.run(scenario())
        assert not errors, errors
        before = [r for r in results if r[1] < switched_at and "smollm2" in r[2]]
        after = [r for r in results if r[0] > switched_at]
        assert before, "the old model answered before the switch"
        assert after and all('"model":"gemma-3-270m"' in r[2].replace(" ", "") for r in after)
        assert not old.scheduler._thread.is_alive(), "the old model was stopped once drained"
        assert service.model_sha256 == new.sha256
    finally:
        new.close()
        old.close()
