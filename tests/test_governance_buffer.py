"""The spend writer while the database is away: memory stays bounded (the oldest records go to
a spill file), and every response is written exactly once when the database is back."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import trio

from rtgate.config.load import parse_text
from rtgate.governance import store
from rtgate.governance.db import Database
from rtgate.governance.service import Governance
from tests.governance_support import priced_config


async def test_spend_spills_while_the_database_is_away_then_is_written_once(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    spill = tmp_path / "spill.jsonl"
    extra = f"    spend_buffer_records: 4\n    spill_path: {spill}\n"
    text = priced_config("ws://127.0.0.1:9/v1", database=f"sqlite:///{blocker}/x.db")
    config = parse_text(text.replace("    spend_flush_interval: 0.01\n",
                                     "    spend_flush_interval: 0.01\n" + extra), path="<t>").config  # fmt: skip
    governance = Governance(config)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(governance.run)
            account = governance.open_account(
                key_hash="a" * 64, key_alias="k", deployment=config.deployments[0],
                model_group="gpt-realtime", session_id="sess_1",
            )  # fmt: skip
            for i in range(10):
                assert (
                    account.on_response(f"resp_{i}", {"input_tokens": 10, "output_tokens": 1})
                    is None
                )
            account.on_response(
                "resp_3", {"input_tokens": 10, "output_tokens": 1}
            )  # reported twice
            while not spill.exists() or governance.buffered > 4:
                await trio.sleep(0.02)
            assert not governance.database_up
            assert governance.readiness()["connected"] is False
            governance.db = Database(f"sqlite:///{tmp_path}/back.db")  # the database returns

            async def rows() -> list[str]:
                logs = await governance.query(
                    partial(store.spend_logs, filters={}, start=None, end=None, limit=100)
                )
                return sorted(row["request_id"] for row in logs)

            while len(await rows()) < 10 or spill.exists() or governance.buffered:
                await trio.sleep(0.02)
            await trio.sleep(0.1)
            assert await rows() == sorted(f"sess_1:resp_{i}" for i in range(10))
            assert not await trio.to_thread.run_sync(lambda: list(tmp_path.glob("spill*")))
            assert governance.database_up
            nursery.cancel_scope.cancel()


def test_transcription_sessions_are_priced() -> None:
    import math

    import attrs
    import orjson

    from rtgate.session.relay import _finished_transcripts

    config = parse_text(priced_config("ws://127.0.0.1:9/v1"), path="<t>").config
    governance = Governance(config)
    base = config.deployments[0]
    for model, usage, want in (
        ("gpt-4o-transcribe",
         {"type": "tokens", "input_tokens": 100, "output_tokens": 20, "total_tokens": 120,
          "input_token_details": {"audio_tokens": 90, "text_tokens": 10}},
         90 * 6e-6 + 10 * 2.5e-6 + 20 * 10e-6),
        ("whisper-1", {"type": "duration", "seconds": 12.5}, 12.5 * 0.006 / 60),
    ):  # fmt: skip
        deployment = attrs.evolve(base, model=model, id=model, model_info={})
        governance.reconfigure(attrs.evolve(config, deployments=(deployment,)))
        account = governance.open_account(
            key_hash=None, key_alias=None, deployment=deployment, model_group="t",
            session_id="sess_t", transcription=True,
        )  # fmt: skip
        frame = orjson.dumps({"type": "conversation.item.input_audio_transcription.completed",
                              "item_id": "item_1", "content_index": 0, "transcript": "hi",
                              "usage": usage})  # fmt: skip
        ((item, parsed),) = _finished_transcripts([frame])
        account.on_transcription(item, parsed)
        account.on_transcription(item, parsed)  # the same transcript twice: priced once
        assert math.isclose(account.cost, want, rel_tol=1e-9), model
