//! Accepts `begin`, then spins forever in `write`: the host must stop it at its deadline.

wit_bindgen::generate!({ path: "../../../wit/diagmon-egress@0.1.0", world: "egress-provider" });

use diagmon::egress::types::{Artifact, EgressResult, Error};
use exports::diagmon::egress::provider::{Guest, GuestUpload, Upload};

struct Component;

impl Guest for Component {
    type Upload = Nothing;
    fn configure(_settings: Vec<(String, String)>) -> Result<(), Error> {
        Ok(())
    }
    fn begin(_artifact: Artifact) -> Result<Upload, Error> {
        Ok(Upload::new(Nothing))
    }
}

struct Nothing;

impl GuestUpload for Nothing {
    fn write(&self, _chunk: Vec<u8>) -> Result<(), Error> {
        let mut counter = 0u64;
        loop {
            counter = std::hint::black_box(counter.wrapping_add(1));
        }
    }
    fn finish(_this: Upload) -> Result<EgressResult, Error> {
        Err(Error::Other("unreachable".to_owned()))
    }
    fn abort(_this: Upload) -> Result<(), Error> {
        Ok(())
    }
}

export!(Component);
