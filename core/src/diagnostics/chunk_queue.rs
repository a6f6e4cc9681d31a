//! A bounded queue of chunks from an async feeder to a summarizer's thread, whose room comes back
//! in batches.
//!
//! The summarizer (hashing and validating every byte) is usually the slowest stage, so its queue
//! is usually full. With a plain bounded channel every chunk it takes wakes the feeder for one
//! more chunk: a wake-up and a task switch per chunk, on the path of every byte. Here the
//! summarizer hands room back [`RETURN_BATCH`] chunks at a time (and all of it before it waits
//! for more), so the feeder wakes once per batch and reads that many chunks in a row. Memory
//! stays bounded by [`CAPACITY`] chunks.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc};

/// Chunks queued before the feeder waits.
const CAPACITY: usize = 8;

/// Room the summarizer hands back at once while it is behind.
const RETURN_BATCH: usize = 4;

/// Creates a queue's two ends.
pub(crate) fn chunk_queue() -> (ChunkSender, ChunkReceiver) {
    let room = Arc::new(Semaphore::new(CAPACITY));
    let (chunks, queue) = mpsc::unbounded_channel();
    (
        ChunkSender {
            room: room.clone(),
            chunks,
        },
        ChunkReceiver {
            room,
            queue,
            taken: 0,
        },
    )
}

/// The feeding end, used from async code.
#[derive(Debug)]
pub(crate) struct ChunkSender {
    room: Arc<Semaphore>,
    chunks: mpsc::UnboundedSender<Bytes>,
}

impl ChunkSender {
    /// Queues `chunk`, waiting for room; false if the receiving end is gone.
    pub(crate) async fn send(&self, chunk: Bytes) -> bool {
        match self.room.acquire().await {
            // The receiver gives the room back when it takes the chunk out.
            Ok(permit) => permit.forget(),
            Err(_) => return false,
        }
        self.chunks.send(chunk).is_ok()
    }
}

/// The receiving end, used on the summarizer's own thread.
#[derive(Debug)]
pub(crate) struct ChunkReceiver {
    room: Arc<Semaphore>,
    queue: mpsc::UnboundedReceiver<Bytes>,
    /// Chunks taken whose room is not handed back yet.
    taken: usize,
}

impl ChunkReceiver {
    /// The next chunk, blocking the thread until there is one; `None` once the sender is gone
    /// and the queue is empty. Must not be called from async code.
    pub(crate) fn blocking_recv(&mut self) -> Option<Bytes> {
        let chunk = match self.queue.try_recv() {
            Ok(chunk) => chunk,
            Err(_) => {
                // Hand back all the room before waiting: the feeder may be waiting for it.
                self.give_back_room();
                self.queue.blocking_recv()?
            }
        };
        self.taken += 1;
        if self.taken >= RETURN_BATCH {
            self.give_back_room();
        }
        Some(chunk)
    }

    fn give_back_room(&mut self) {
        if self.taken > 0 {
            self.room.add_permits(self.taken);
            self.taken = 0;
        }
    }
}

impl Drop for ChunkReceiver {
    fn drop(&mut self) {
        // A feeder waiting for room learns that nothing will take its chunks.
        self.room.close();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn chunks_arrive_in_order_and_the_end_follows_the_last() {
        let (sender, mut receiver) = chunk_queue();
        let reader = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while let Some(chunk) = receiver.blocking_recv() {
                seen.push(chunk[0]);
            }
            seen
        });
        for index in 0..=200u8 {
            assert!(sender.send(Bytes::from(vec![index])).await);
        }
        drop(sender);
        let seen = reader.join().unwrap();
        assert_eq!(seen, (0..=200u8).collect::<Vec<_>>());
    }

    /// Takes `count` chunks on a thread of its own (the receiver blocks, which async code must
    /// not) and gives the receiver back.
    fn take(mut receiver: ChunkReceiver, count: usize) -> ChunkReceiver {
        std::thread::spawn(move || {
            for _ in 0..count {
                receiver.blocking_recv().expect("a queued chunk");
            }
            receiver
        })
        .join()
        .expect("the taking thread")
    }

    #[tokio::test]
    async fn the_feeder_waits_when_the_queue_is_full_and_room_comes_back_a_batch_at_a_time() {
        let (sender, receiver) = chunk_queue();
        for _ in 0..CAPACITY {
            assert!(sender.send(Bytes::from_static(b"x")).await);
        }
        let blocked = tokio::time::timeout(
            Duration::from_millis(50),
            sender.send(Bytes::from_static(b"y")),
        )
        .await;
        assert!(blocked.is_err(), "a full queue makes the feeder wait");
        let receiver = take(receiver, RETURN_BATCH - 1);
        assert_eq!(
            sender.room.available_permits(),
            0,
            "less than a batch taken from a queue that still holds chunks gives nothing back"
        );
        let receiver = take(receiver, 1);
        assert_eq!(sender.room.available_permits(), RETURN_BATCH);
        for _ in 0..RETURN_BATCH {
            let sent = tokio::time::timeout(
                Duration::from_secs(5),
                sender.send(Bytes::from_static(b"z")),
            )
            .await;
            assert_eq!(sent, Ok(true), "a batch taken gives its room back");
        }
        drop(receiver);
    }

    #[tokio::test]
    async fn a_receiver_that_waits_gives_back_the_room_it_held_first() {
        let (sender, mut receiver) = chunk_queue();
        assert!(sender.send(Bytes::from_static(b"a")).await);
        let taker = std::thread::spawn(move || {
            // Takes one chunk (less than a batch), then waits for the next one.
            receiver.blocking_recv().unwrap();
            let next = receiver.blocking_recv();
            (next, receiver)
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while sender.room.available_permits() < CAPACITY {
            assert!(
                std::time::Instant::now() < deadline,
                "the room held by a waiting receiver never came back"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(sender.send(Bytes::from_static(b"b")).await);
        let (next, _receiver) = taker.join().unwrap();
        assert_eq!(next.as_deref(), Some(&b"b"[..]));
    }

    #[tokio::test]
    async fn a_feeder_waiting_for_room_learns_the_receiver_is_gone() {
        let (sender, receiver) = chunk_queue();
        for _ in 0..CAPACITY {
            assert!(sender.send(Bytes::from_static(b"x")).await);
        }
        let waiting = tokio::spawn(async move { sender.send(Bytes::from_static(b"y")).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(receiver);
        let sent = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert!(matches!(sent, Ok(Ok(false))), "{sent:?}");
    }
}
