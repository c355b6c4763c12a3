//! The v4 remotecommand error stream's payload: a `metav1.Status` as JSON, which is how a
//! client learns the exit code (client-go's v4 error decoder reads exactly these fields).

use serde_json::json;

pub fn success() -> Vec<u8> {
    json!({"metadata": {}, "status": "Success"}).to_string().into_bytes()
}

/// An exit code: Success for 0, else the kubelet's `NonZeroExitCode` failure.
pub fn exit(code: i32) -> Vec<u8> {
    if code == 0 {
        return success();
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: error executing command [...], exit code {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
    .to_string()
    .into_bytes()
}

/// A failure that is not the command's exit (it could not be started, the container is gone).
pub fn internal(message: &str) -> Vec<u8> {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("Internal error occurred: {message}"),
        "reason": "InternalError",
        "code": 500,
        "details": {"causes": [{"message": message}]},
    })
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    #[test]
    fn exit_codes_as_client_go_reads_them() {
        let v: serde_json::Value = serde_json::from_slice(&super::exit(3)).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        let v: serde_json::Value = serde_json::from_slice(&super::exit(0)).unwrap();
        assert_eq!(v["status"], "Success");
    }
}
