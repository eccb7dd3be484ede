import asyncio
import socket

import aiomqtt
import pytest

from aiotflow.contracts import ConfigError
from aiotflow.demo import DemoBroker


async def test_demo_broker_pub_sub_retain_and_qos1() -> None:
    async with DemoBroker() as broker:
        assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
        async with aiomqtt.Client("127.0.0.1", broker.port) as sub, \
                aiomqtt.Client("127.0.0.1", broker.port) as pub:
            await sub.subscribe("t/+/x", qos=1)
            await pub.publish("t/1/x", b"one", qos=1)
            await pub.publish("t/1/y", b"skip", qos=0)
            await pub.publish("t/2/x", b"two", qos=0)
            await pub.publish("r/1", b"kept", qos=1, retain=True)
            got = []
            async with asyncio.timeout(5):
                async for m in sub.messages:
                    got.append((str(m.topic), m.payload, m.qos))
                    if len(got) == 2:
                        break
            # (amqtt delivers the QoS 0 message at the subscription's QoS 1, not at 0)
            assert [g[:2] for g in got] == [("t/1/x", b"one"), ("t/2/x", b"two")]
            assert got[0][2] == 1
            await sub.subscribe("r/#")
            async with asyncio.timeout(5):
                m = await anext(aiter(sub.messages))
            assert (str(m.topic), m.payload, m.retain) == ("r/1", b"kept", True)
    # stopped: nothing listens there any more
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", broker.port), 1):
        pass


async def test_demo_broker_on_a_taken_port_fails_clearly() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ConfigError, match="address already in use"):
            async with DemoBroker(port=taken.getsockname()[1]):
                pass
