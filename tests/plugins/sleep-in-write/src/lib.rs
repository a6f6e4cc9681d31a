//! Accepts `begin`, then sleeps for an hour in `write`: a wait inside a host call
//! (`wasi:io/poll` on a `wasi:clocks` pollable), which the epoch deadline cannot interrupt. The
//! host must end it at the write deadline and release the thread.

wit_bindgen::generate!({ path: "../../../wit/diagmon-egress@0.1.0", world: "egress-provider" });

use diagmon::egress::types::{Artifact, EgressResult, Error};
use exports::diagmon::egress::provider::{Guest, GuestUpload, Upload};

struct Component;

impl Guest for Component {
    type Upload = Sleeper;
    fn configure(_settings: Vec<(String, String)>) -> Result<(), Error> {
        Ok(())
    }
    fn begin(_artifact: Artifact) -> Result<Upload, Error> {
        Ok(Upload::new(Sleeper))
    }
}

struct Sleeper;

impl GuestUpload for Sleeper {
    fn write(&self, _chunk: Vec<u8>) -> Result<(), Error> {
        std::thread::sleep(std::time::Duration::from_secs(3600));
        Err(Error::Other("WOKE UP after an hour".to_owned()))
    }
    fn finish(_this: Upload) -> Result<EgressResult, Error> {
        Err(Error::Other("unreachable".to_owned()))
    }
    fn abort(_this: Upload) -> Result<(), Error> {
        Ok(())
    }
}

export!(Component);
