//! proxier: a kube-proxy IPVS-mode replacement.
//!
//! Sources → model → plan → reconcile → dataplane; see DESIGN.md.
#![forbid(unsafe_code)]
