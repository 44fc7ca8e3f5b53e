//! Sans-io reading of what the kernel sends: messages cut out of a datagram, and ACKs.

/// `NLMSG_ERROR`: an ACK (code 0) or an error answer.
pub const NLMSG_ERROR: u16 = 2;

/// Length of `struct nlmsghdr`.
const HEADER_LEN: usize = 16;

/// Splits a receive buffer into netlink messages by their length fields (each message keeps
/// its header; padding is skipped); stops at a malformed length rather than reading past the
/// buffer.
pub fn split_messages(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.len() < HEADER_LEN {
            return None;
        }
        let length = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if length < HEADER_LEN || length > rest.len() {
            return None;
        }
        let (message, tail) = rest.split_at(length);
        let aligned = (length + 3) & !3;
        rest = tail.get(aligned - length..).unwrap_or_default();
        Some(message)
    })
}

/// `NLM_F_ACK`.
const NLM_F_ACK: u16 = 4;

/// Makes a buffer of requests one window (see [`crate::AckTracker`]): `NLM_F_ACK` is cleared on
/// every message but the last and set on the last. Stops at a malformed length, as
/// [`split_messages`] does.
pub fn ack_last_only(buffer: &mut [u8]) {
    let mut offset = 0;
    let mut last = None;
    while buffer.len() - offset >= HEADER_LEN {
        let b = &buffer[offset..];
        let length = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if length < HEADER_LEN || length > b.len() {
            break;
        }
        set_ack(&mut buffer[offset..], false);
        last = Some(offset);
        offset += (length + 3) & !3;
        if offset >= buffer.len() {
            break;
        }
    }
    if let Some(last) = last {
        set_ack(&mut buffer[last..], true);
    }
}

/// Sets or clears `NLM_F_ACK` in the header (`nlmsg_flags` is bytes 6..8) of `message`.
fn set_ack(message: &mut [u8], ack: bool) {
    let flags = u16::from_ne_bytes([message[6], message[7]]);
    let flags = if ack {
        flags | NLM_F_ACK
    } else {
        flags & !NLM_F_ACK
    };
    message[6..8].copy_from_slice(&flags.to_ne_bytes());
}

/// The answer an `NLMSG_ERROR` message carries for the request with `sequence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The sequence number of the request answered.
    pub sequence: u32,
    /// 0 for success, else the (positive) errno.
    pub errno: i32,
}

impl Ack {
    /// Reads one message (as cut by [`split_messages`]); `None` unless it is an `NLMSG_ERROR`
    /// long enough to hold its code.
    pub fn parse(message: &[u8]) -> Option<Ack> {
        if message.len() < HEADER_LEN + 4 {
            return None;
        }
        let kind = u16::from_ne_bytes([message[4], message[5]]);
        if kind != NLMSG_ERROR {
            return None;
        }
        let sequence = u32::from_ne_bytes([message[8], message[9], message[10], message[11]]);
        let code = i32::from_ne_bytes([message[16], message[17], message[18], message[19]]);
        Some(Ack {
            sequence,
            errno: code.wrapping_neg(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `NLMSG_ERROR` as the kernel sends it with `NETLINK_CAP_ACK` (the request's header
    /// echoed, its payload not).
    fn error_message(sequence: u32, code: i32) -> Vec<u8> {
        #[rustfmt::skip]
        let bytes = [
            &36u32.to_ne_bytes()[..],     // nlmsg_len
            &2u16.to_ne_bytes(),          // NLMSG_ERROR
            &0x100u16.to_ne_bytes(),      // NLM_F_CAPPED
            &sequence.to_ne_bytes(),      // nlmsg_seq
            &0u32.to_ne_bytes(),          // nlmsg_pid
            &code.to_ne_bytes(),          // error: 0 or -errno
            &[0; 16],                     // the request's nlmsghdr
        ].concat();
        bytes
    }

    #[test]
    fn acks_and_errors_parse() {
        assert_eq!(
            Ack::parse(&error_message(7, 0)),
            Some(Ack {
                sequence: 7,
                errno: 0
            })
        );
        assert_eq!(
            Ack::parse(&error_message(8, -17)).map(|a| a.errno),
            Some(17)
        );
        let mut done = error_message(9, 0);
        done[4] = 3; // NLMSG_DONE
        assert_eq!(Ack::parse(&done), None);
        assert_eq!(Ack::parse(&error_message(1, 0)[..19]), None, "too short");
    }

    #[test]
    fn only_the_last_request_of_a_window_asks_for_an_ack() {
        // Three requests with NLM_F_REQUEST | NLM_F_ACK (5), the middle one 21 bytes long.
        let mut bytes = Vec::new();
        for length in [16u32, 21, 16] {
            let mut message = vec![0u8; (length as usize + 3) & !3];
            message[..4].copy_from_slice(&length.to_ne_bytes());
            message[6..8].copy_from_slice(&5u16.to_ne_bytes());
            bytes.extend(message);
        }
        ack_last_only(&mut bytes);
        let flags: Vec<u16> = split_messages(&bytes)
            .map(|m| u16::from_ne_bytes([m[6], m[7]]))
            .collect();
        assert_eq!(flags, [1, 1, 5]);
        // A lone request without the flag gets it.
        let mut one = bytes[..16].to_vec();
        ack_last_only(&mut one);
        assert_eq!(u16::from_ne_bytes([one[6], one[7]]), 5);
        ack_last_only(&mut []);
    }

    #[test]
    fn messages_split_by_length_and_stop_at_garbage() {
        let mut bytes = error_message(1, 0);
        // A 21-byte message padded to 24.
        let mut odd = vec![0u8; 24];
        odd[..4].copy_from_slice(&21u32.to_ne_bytes());
        bytes.extend(&odd);
        bytes.extend(error_message(2, 0));
        let lengths: Vec<usize> = split_messages(&bytes).map(<[u8]>::len).collect();
        assert_eq!(lengths, [36, 21, 36]);

        let mut bad = error_message(1, 0);
        bad[..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert_eq!(split_messages(&bad).count(), 0, "a length past the end");
        bad[..4].copy_from_slice(&3u32.to_ne_bytes());
        assert_eq!(split_messages(&bad).count(), 0, "a length below the header");
        assert_eq!(split_messages(&[0; 10]).count(), 0, "a truncated header");
    }
}
