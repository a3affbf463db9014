//! MLLP framing (HL7 v2 Minimal Lower Layer Protocol, release 2): `<VT> payload <FS><CR>`.
//!
//! [`parse_frame`] is a pure streaming decoder in the shape of mini-redis's
//! `parse_frame -> Result<Option<Frame>>`: it looks at the bytes received so far and returns
//! `Ok(None)` when it needs more, a [`Frame`] with the number of bytes to consume, or a
//! [`FrameError`] that also says how many bytes to drop. Bytes before a `<VT>` are garbage
//! (noise after a reconnect, a stray CR/LF) and are skipped, and counted. The caller owns the
//! buffer and the socket.

/// Start block (vertical tab).
pub const START: u8 = 0x0B;
/// End block (file separator).
pub const END: u8 = 0x1C;
/// The carriage return that follows the end block.
pub const CR: u8 = 0x0D;

/// One decoded frame, borrowing its payload from the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The message bytes between `<VT>` and `<FS><CR>`.
    pub payload: &'a [u8],
    /// Bytes of the buffer this frame used, garbage before it included: drop them.
    pub consumed: usize,
    /// Garbage bytes skipped before the `<VT>`.
    pub skipped: usize,
}

/// A framing error; `consumed` bytes should be dropped before decoding again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The payload grew beyond the limit without an end block. The connection should be
    /// closed: what follows cannot be trusted to be in step.
    #[error("MLLP frame larger than the {limit}-byte limit")]
    Oversized { limit: usize, consumed: usize },
    /// A new `<VT>` arrived before the end of the current frame: the sender gave up on the
    /// previous message. The partial frame is dropped; decoding resumes at the new `<VT>`.
    #[error(
        "MLLP frame truncated: a start block arrived after {length} payload bytes without an end block"
    )]
    Truncated { length: usize, consumed: usize },
    /// `<FS>` was followed by something other than `<CR>`.
    #[error("MLLP end block not followed by a carriage return (found byte 0x{found:02X})")]
    MissingCarriageReturn { found: u8, consumed: usize },
}

impl FrameError {
    /// Bytes to drop from the buffer before decoding again.
    pub fn consumed(&self) -> usize {
        match self {
            FrameError::Oversized { consumed, .. }
            | FrameError::Truncated { consumed, .. }
            | FrameError::MissingCarriageReturn { consumed, .. } => *consumed,
        }
    }
}

/// Decode the next frame from `buf` (see the module docs). `max_payload` bounds the payload.
pub fn parse_frame(buf: &[u8], max_payload: usize) -> Result<Option<Frame<'_>>, FrameError> {
    let Some(start) = buf.iter().position(|&b| b == START) else {
        // All garbage so far; it can't start a frame. Report nothing until a VT shows up;
        // the caller may drop the buffer with `garbage_len`.
        return Ok(None);
    };
    let body = &buf[start + 1..];
    let scan = &body[..body.len().min(max_payload + 1)];
    for (i, &b) in scan.iter().enumerate() {
        match b {
            END => {
                if i > max_payload {
                    break;
                }
                return match body.get(i + 1) {
                    None => Ok(None),
                    Some(&CR) => Ok(Some(Frame {
                        payload: &body[..i],
                        consumed: start + 1 + i + 2,
                        skipped: start,
                    })),
                    Some(&found) => Err(FrameError::MissingCarriageReturn {
                        found,
                        consumed: start + 1 + i + 1,
                    }),
                };
            }
            START => {
                return Err(FrameError::Truncated {
                    length: i,
                    consumed: start + 1 + i,
                });
            }
            _ => {}
        }
    }
    if body.len() > max_payload {
        return Err(FrameError::Oversized {
            limit: max_payload,
            consumed: buf.len(),
        });
    }
    Ok(None)
}

/// How many leading bytes of `buf` are garbage that can never be part of a frame (everything
/// when there is no `<VT>`), so a caller can bound its buffer while waiting.
pub fn garbage_len(buf: &[u8]) -> usize {
    buf.iter().position(|&b| b == START).unwrap_or(buf.len())
}

/// What is left in the buffer at end of stream: `Some(error)` when a frame was cut off.
pub fn finish(buf: &[u8]) -> Option<FrameError> {
    let start = buf.iter().position(|&b| b == START)?;
    Some(FrameError::Truncated {
        length: buf.len() - start - 1,
        consumed: buf.len(),
    })
}

/// Wrap a payload in `<VT> ... <FS><CR>`.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 3);
    out.push(START);
    out.extend_from_slice(payload);
    out.push(END);
    out.push(CR);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_frames_incrementally() {
        let wire = [frame(b"MSH|one"), frame(b"MSH|two")].concat();
        for cut in 0..wire.len() {
            // Feeding a prefix never yields a wrong frame.
            if let Ok(Some(f)) = parse_frame(&wire[..cut], 100) {
                assert_eq!(f.payload, b"MSH|one");
            }
        }
        let f = parse_frame(&wire, 100).unwrap().unwrap();
        assert_eq!((f.payload, f.consumed, f.skipped), (&b"MSH|one"[..], 10, 0));
        let f = parse_frame(&wire[10..], 100).unwrap().unwrap();
        assert_eq!(f.payload, b"MSH|two");
    }

    #[test]
    fn skips_garbage_before_start_block() {
        let wire = [b"\r\nnoise".to_vec(), frame(b"MSH|x")].concat();
        let f = parse_frame(&wire, 100).unwrap().unwrap();
        assert_eq!((f.payload, f.skipped), (&b"MSH|x"[..], 7));
        assert_eq!(garbage_len(b"abc"), 3);
        assert_eq!(parse_frame(b"abc", 100), Ok(None));
    }

    #[test]
    fn truncated_oversized_and_bad_trailer() {
        let wire = [b"\x0bMSH|cut".to_vec(), frame(b"MSH|ok")].concat();
        let err = parse_frame(&wire, 100).unwrap_err();
        assert_eq!(
            err,
            FrameError::Truncated {
                length: 7,
                consumed: 8
            }
        );
        let f = parse_frame(&wire[err.consumed()..], 100).unwrap().unwrap();
        assert_eq!(f.payload, b"MSH|ok");

        let big = [vec![START], vec![b'x'; 50]].concat();
        assert!(matches!(
            parse_frame(&big, 10),
            Err(FrameError::Oversized { limit: 10, .. })
        ));
        assert_eq!(parse_frame(&big[..5], 10), Ok(None));
        assert!(matches!(
            parse_frame(b"\x0bMSH\x1cX", 10),
            Err(FrameError::MissingCarriageReturn { found: b'X', .. })
        ));
        assert!(matches!(
            finish(b"\x0bMSH|half"),
            Some(FrameError::Truncated { length: 8, .. })
        ));
        assert_eq!(finish(b"noise"), None);
    }
}
