"""MQTT connection settings: TLS fields checked by name, secrets never in the URL or repr."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from aiotflow.contracts.mqtt import MqttSettings


def test_a_password_in_the_url_is_taken_out_and_never_shown() -> None:
    m = MqttSettings(url="mqtts://bob:s3cr%40t-77@broker.example:8884")
    assert m.url == "mqtts://broker.example:8884" and m.username == "bob"
    assert m.secret() == "s3cr@t-77" and m.tls and m.port == 8884
    for text in (repr(m), str(m), m.model_dump_json()):
        assert "s3cr" not in text
    assert MqttSettings(url="mqtts://h").port == 8883 and MqttSettings().port == 1883


def test_tls_and_credential_fields_are_checked_by_name(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("from-a-file\n")
    assert MqttSettings(password_file=pw).secret() == "from-a-file"
    cases = [
        ({"url": "mqtt://h", "ca_file": pw}, "need an mqtts:// url"),
        ({"url": "mqtts://h", "cert_file": pw}, "go together"),
        ({"url": "mqtts://h", "ca_file": tmp_path / "nope.pem"}, "ca_file: no such file"),
        ({"password": "x", "password_file": pw}, "not both"),
        ({"url": "mqtt://u:p@h", "password": "y"}, "both in the URL"),
        ({"url": "mqtt://h:99999"}, "1 to 65535"),
        ({"url": "http://h"}, "mqtts://host:8883"),
    ]
    for kwargs, words in cases:
        with pytest.raises(ValidationError, match=words):
            MqttSettings(**kwargs)  # type: ignore[arg-type]


def test_a_tls_context_verifies_the_broker_unless_told_not_to_by_name(tmp_path: Path) -> None:
    import ssl

    ctx = MqttSettings(url="mqtts://h").tls_context()
    assert ctx is not None and ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    insecure = MqttSettings(url="mqtts://h", tls_insecure=True).tls_context()
    assert insecure is not None and not insecure.check_hostname
    assert insecure.verify_mode == ssl.CERT_REQUIRED  # the chain is still verified
    assert MqttSettings().tls_context() is None


async def test_a_task_that_lost_its_cancellation_is_cancelled_again() -> None:
    """A loop that swallows one cancellation (as a lost one looks) still ends, logged with
    where it waited; one that ends at the first cancel is not touched again."""
    import asyncio

    import structlog

    from aiotflow.contracts.mqtt import reap

    lost = 0

    async def stubborn() -> None:
        nonlocal lost
        while True:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                if lost:
                    raise
                lost += 1  # the first cancellation goes missing

    async def obedient() -> None:
        await asyncio.sleep(30)

    tasks = [asyncio.create_task(stubborn(), name="stubborn"),
             asyncio.create_task(obedient(), name="obedient")]
    await asyncio.sleep(0)
    for task in tasks:
        task.cancel()
    with structlog.testing.capture_logs() as logs:
        async with asyncio.timeout(5):
            await reap(tasks, every_s=0.1)
    assert all(task.cancelled() for task in tasks) and lost == 1
    assert [(e["event"], e["task"]) for e in logs] == [("task.cancel_lost", "stubborn")]
    assert any("stubborn" in w for w in logs[0]["waiting_at"])
