//! Reading a Kafka cluster back with an independent client: Python's aiokafka, which shares
//! nothing with librdkafka.

use std::path::Path;

use serde_json::Value;

/// Reads every partition of the topics from the start to their end offsets and prints one JSON
/// line per message.
pub const READER: &str = r#"
import asyncio, json, sys
from aiokafka import AIOKafkaConsumer, TopicPartition

async def main(bootstrap, partitions, topics):
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        async def behind():
            return [tp for tp in tps if await consumer.position(tp) < end[tp]]
        while await behind():
            batches = await consumer.getmany(timeout_ms=1000)
            for tp, messages in batches.items():
                for m in messages:
                    print(json.dumps({
                        "topic": m.topic, "partition": m.partition, "offset": m.offset,
                        "key": None if m.key is None else m.key.decode(),
                        "value": m.value.decode(),
                        "headers": {k: v.decode() for k, v in m.headers},
                    }))
    finally:
        await consumer.stop()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3:]))
"#;

/// What aiokafka reads back from every partition of `topics` at `bootstrap`, in each
/// partition's order: one JSON object per message (topic, partition, offset, key, value, headers).
pub fn read_back(python: &Path, bootstrap: &str, partitions: i32, topics: &[&str]) -> Vec<Value> {
    let out = std::process::Command::new(python)
        .args(["-c", READER, bootstrap, &partitions.to_string()])
        .args(topics)
        .output()
        .unwrap();
    assert!(out.status.success(), "aiokafka failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}
