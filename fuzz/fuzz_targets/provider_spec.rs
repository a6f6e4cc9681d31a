//! The provider-spec parser (`Name[:Keywords[:Level[:key=value;...]]]`, the one the CLI, HTTP and
//! configuration share) on arbitrary text: it answers or refuses, never panics, and an accepted
//! spec names a provider, at a level the runtime accepts (0 to 5).

#![no_main]

use diagmon::profiles::parse_provider;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(provider) = parse_provider(spec) {
        assert!(
            !provider.name.trim().is_empty(),
            "accepted {spec:?} without a name"
        );
        assert!(
            provider.level <= 5,
            "accepted level {} from {spec:?}",
            provider.level
        );
    }
});
