import asyncio

import aiomqtt

from aiotflow.demo.broker import EmbeddedBroker, topic_matches


def test_topic_matching() -> None:
    assert topic_matches("a/+/c", "a/b/c")
    assert not topic_matches("a/+/c", "a/b/d")
    assert topic_matches("a/#", "a/b/c") and topic_matches("#", "x")
    assert not topic_matches("#", "$SYS/x")
    assert not topic_matches("a/+", "a/b/c")


async def test_embedded_broker_pub_sub_retain_and_qos1() -> None:
    async with EmbeddedBroker() as broker:
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
            assert got == [("t/1/x", b"one", 1), ("t/2/x", b"two", 0)]
            await sub.subscribe("r/#")
            async with asyncio.timeout(5):
                m = await anext(aiter(sub.messages))
            assert (str(m.topic), m.payload, m.retain) == ("r/1", b"kept", True)
