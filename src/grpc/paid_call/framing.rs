//! The gRPC framing of a byte stream, followed without buffering it: each message is 1 flag byte, a
//! 4-byte big-endian length and the payload. Pure, no I/O: [`MessageLimit`] refuses a message as
//! soon as its length prefix is read, over any split of the stream into chunks.

/// A gRPC message on the wire: 1 flag byte, a 4-byte big-endian length, the payload.
pub(super) const MESSAGE_PREFIX_BYTES: usize = 5;

/// Follows the framing and stops at the first message whose announced length is above the limit.
#[derive(Debug)]
pub(super) struct MessageLimit {
    max: usize,
    prefix: [u8; MESSAGE_PREFIX_BYTES],
    prefix_read: usize,
    payload_left: u64,
    complete: u64,
}

impl MessageLimit {
    pub(super) fn new(max: usize) -> Self {
        Self { max, prefix: [0; MESSAGE_PREFIX_BYTES], prefix_read: 0, payload_left: 0, complete: 0 }
    }

    pub(super) fn max(&self) -> usize {
        self.max
    }

    /// Reads the next bytes of the stream; `Err(size)` names a message above the limit.
    pub(super) fn feed(&mut self, mut data: &[u8]) -> Result<(), u64> {
        while !data.is_empty() {
            if self.payload_left > 0 {
                let taken = data.len().min(usize::try_from(self.payload_left).unwrap_or(usize::MAX));
                self.payload_left -= taken as u64;
                data = &data[taken..];
                if self.payload_left == 0 {
                    self.complete += 1;
                }
                continue;
            }
            let taken = data.len().min(MESSAGE_PREFIX_BYTES - self.prefix_read);
            self.prefix[self.prefix_read..self.prefix_read + taken].copy_from_slice(&data[..taken]);
            self.prefix_read += taken;
            data = &data[taken..];
            if self.prefix_read == MESSAGE_PREFIX_BYTES {
                self.prefix_read = 0;
                let [_, a, b, c, d] = self.prefix;
                let size = u64::from(u32::from_be_bytes([a, b, c, d]));
                if size > self.max as u64 {
                    return Err(size);
                }
                self.payload_left = size;
                if size == 0 {
                    self.complete += 1;
                }
            }
        }
        Ok(())
    }

    /// How many whole messages have gone by.
    pub(super) fn complete_messages(&self) -> u64 {
        self.complete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: u32) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend(std::iter::repeat_n(7u8, len as usize));
        bytes
    }

    #[test]
    fn messages_are_counted_across_any_split_of_the_stream() {
        let stream: Vec<u8> = [message(3), message(0), message(10)].concat();
        for chunk in 1..=stream.len() {
            let mut limit = MessageLimit::new(10);
            for part in stream.chunks(chunk) {
                limit.feed(part).unwrap();
            }
            assert_eq!(limit.complete_messages(), 3, "chunks of {chunk}");
        }
    }

    #[test]
    fn a_message_above_the_limit_is_named_as_soon_as_its_length_is_read() {
        let mut limit = MessageLimit::new(10);
        limit.feed(&message(10)).unwrap();
        assert_eq!(limit.feed(&message(11)[..5]), Err(11));
        let mut limit = MessageLimit::new(10);
        assert_eq!(limit.feed(&[0, 0xff, 0xff, 0xff, 0xff]), Err(u64::from(u32::MAX)));
    }
}
