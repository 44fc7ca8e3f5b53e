#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod ack;
#[cfg(feature = "socket")]
mod error;
mod message;
#[cfg(feature = "socket")]
mod socket;
mod vocabulary;

pub use ack::{AckTracker, Sequence};
#[cfg(feature = "socket")]
pub use error::Error;
pub use message::{ack_last_only, split_messages, Ack, NLMSG_ERROR};
#[cfg(feature = "socket")]
pub use socket::{NetlinkSocket, SilentPeer, DEFAULT_RECEIVE_TIMEOUT};
pub use vocabulary::{Family, Protocol};
