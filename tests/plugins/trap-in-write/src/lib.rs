//! Accepts `begin`, then panics in the first `write`: the host must report a crash with the panic
//! message and keep serving other uploads.

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
    fn write(&self, chunk: Vec<u8>) -> Result<(), Error> {
        panic!("fixture panics on a chunk of {} bytes", chunk.len());
    }
    fn finish(_this: Upload) -> Result<EgressResult, Error> {
        Err(Error::Other("unreachable".to_owned()))
    }
    fn abort(_this: Upload) -> Result<(), Error> {
        Ok(())
    }
}

export!(Component);
