//! conntrack over ctnetlink (flush by filter) and conntrack sizing that never lowers a host limit.
#![forbid(unsafe_code)]
