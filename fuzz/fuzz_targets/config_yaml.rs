#![no_main]
//! Arbitrary text as a `KubeProxyConfiguration` file into proxier's configuration loader (the
//! YAML limits, the parse, `ProxySettings::resolve` and `Config::from_kube_proxy`, as `run` and
//! `plan --config` use them): errors are fine, panics are not. What resolves for `run` also
//! converts for `plan`.

use libfuzzer_sys::fuzz_target;
use proxier::config::{Config, KubeProxyConfiguration, ProxySettings};

fuzz_target!(|text: &str| {
    let Ok(kpc) = KubeProxyConfiguration::from_yaml(text) else {
        return;
    };
    let _ = kpc.unimplemented_fields();
    let resolved = ProxySettings::resolve(&kpc);
    let converted = Config::from_kube_proxy(&kpc);
    if resolved.is_ok() {
        assert!(converted.is_ok(), "run accepts what plan rejects: {converted:?}");
    }
});
