//! Binding many virtual IPs in few round trips: a window of `RTM_NEWADDR` requests per
//! `sendmsg`, only the last asking for an ACK (as netlink-ipvs batches IPVS operations). The
//! kernel processes the messages of one `sendmsg` in order and reports every error, so each
//! address still gets its own answer (EEXIST for one already bound, ENODEV when the interface
//! is gone), while 10,000 addresses cost ~80 round trips instead of 10,000 (issue 15: at cold
//! start on an emulated VM, 5.2 s one by one).

use std::net::IpAddr;
use std::sync::{Condvar, Mutex, PoisonError};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

/// The request body that binds or unbinds `ip` (as /32 or /128) on the interface with `index`.
pub fn address_message(index: u32, ip: IpAddr) -> AddressMessage {
    let mut message = AddressMessage::default();
    message.header.index = index;
    message.header.scope = AddressScope::Universe;
    match ip {
        IpAddr::V4(_) => {
            message.header.family = AddressFamily::Inet;
            message.header.prefix_len = 32;
            message.attributes.push(AddressAttribute::Local(ip));
            message.attributes.push(AddressAttribute::Address(ip));
        }
        IpAddr::V6(_) => {
            message.header.family = AddressFamily::Inet6;
            message.header.prefix_len = 128;
            // No duplicate address detection: the address is usable at once.
            message.header.flags = AddressHeaderFlags::Nodad;
            message.attributes.push(AddressAttribute::Address(ip));
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
    }
    message
}

/// Requests per window: half of the error answers the default receive buffer holds (~256, as
/// measured for IPVS), so a window in which every address fails still fits.
pub const ADDRESS_WINDOW: usize = 128;

/// One window of address additions, encoded: `ips[i]` carries sequence number
/// `first_sequence + i`; only the last request asks for an ACK.
pub fn encode_bind_window(index: u32, ips: &[IpAddr], first_sequence: u32) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(ips.len() * 64);
    for (offset, ip) in ips.iter().enumerate() {
        let payload = RouteNetlinkMessage::NewAddress(address_message(index, *ip));
        let mut request =
            NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(payload));
        request.header.flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL;
        request.header.sequence_number = first_sequence.wrapping_add(offset as u32);
        request.finalize();
        let start = bytes.len();
        bytes.resize(start + request.buffer_len(), 0);
        request.serialize(&mut bytes[start..]);
    }
    netlink_base::ack_last_only(&mut bytes);
    bytes
}

/// How many addresses of a run the binding thread has had answered, for the thread that sends
/// the IPVS operations that need them.
#[derive(Debug, Default)]
pub struct BindProgress {
    answered: Mutex<usize>,
    moved: Condvar,
}

impl BindProgress {
    /// `answered` addresses have their answer.
    pub fn advance_to(&self, answered: usize) {
        let mut now = self.answered.lock().unwrap_or_else(PoisonError::into_inner);
        *now = (*now).max(answered);
        self.moved.notify_all();
    }

    /// Waits until at least `answered` addresses have their answer.
    pub fn wait_for(&self, answered: usize) {
        let mut now = self.answered.lock().unwrap_or_else(PoisonError::into_inner);
        while *now < answered {
            now = self.moved.wait(now).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Marks every address answered when dropped (the binding thread ends, even by a panic), so
/// the thread waiting on [`BindProgress`] never waits forever.
pub struct AllAnsweredOnDrop<'a>(pub &'a BindProgress);

impl Drop for AllAnsweredOnDrop<'_> {
    fn drop(&mut self) {
        self.0.advance_to(usize::MAX);
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::NLM_F_ACK;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The IPVS side waits for the addresses it needs, and is released when the binding
    /// thread ends early (even by a panic).
    #[test]
    fn progress_releases_waiters_as_addresses_are_answered_and_at_the_end() {
        let progress = BindProgress::default();
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| progress.wait_for(200));
            progress.advance_to(128);
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(!waiter.is_finished(), "released before its address");
            progress.advance_to(256);
            waiter.join().unwrap();
        });
        let progress = BindProgress::default();
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| progress.wait_for(10_000));
            let binder = scope.spawn(|| {
                let _finished = AllAnsweredOnDrop(&progress);
                panic!("binding thread failed");
            });
            assert!(binder.join().is_err());
            waiter.join().unwrap();
        });
    }

    /// Each address is its own request (the same message `add_address` sends, so EEXIST and
    /// ENODEV keep their meaning per address), with consecutive sequence numbers, and only the
    /// last asks for the ACK that closes the window.
    #[test]
    fn a_window_is_one_request_per_address_and_one_ack() {
        let ips = [ip("10.96.0.1"), ip("fd00::1"), ip("10.96.0.2")];
        let bytes = encode_bind_window(7, &ips, u32::MAX);
        let messages: Vec<_> = netlink_base::split_messages(&bytes)
            .map(|m| NetlinkMessage::<RouteNetlinkMessage>::deserialize(m).unwrap())
            .collect();
        assert_eq!(messages.len(), 3);
        let sequences: Vec<u32> = messages.iter().map(|m| m.header.sequence_number).collect();
        assert_eq!(sequences, [u32::MAX, 0, 1], "consecutive, wrapping");
        let create = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL;
        let flags: Vec<u16> = messages.iter().map(|m| m.header.flags).collect();
        assert_eq!(flags, [create, create, create | NLM_F_ACK]);
        for (message, want) in messages.iter().zip(ips) {
            let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(address)) =
                &message.payload
            else {
                panic!("not RTM_NEWADDR: {message:?}");
            };
            assert_eq!(address, &address_message(7, want));
        }
    }
}
