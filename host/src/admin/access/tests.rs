//! The Host, token and content-type rules, and the refusal to listen off loopback without a
//! token.

use super::*;

fn at(addr: &str) -> AdminAccess {
    AdminAccess::new(
        addr.parse().unwrap(),
        &["Admin.Example".to_owned(), "ops.example:8443".to_owned()],
        None,
    )
}

#[test]
fn a_host_must_name_the_listen_address_loopback_with_its_port_or_an_allowed_name() {
    let a = at("127.0.0.1:18001");
    for ok in [
        "127.0.0.1:18001",
        "localhost:18001",
        "LOCALHOST:18001",
        "[::1]:18001",
        "admin.example",
        "admin.example:9999",
        "ops.example:8443",
    ] {
        assert!(a.names_this_server(ok, None), "{ok}");
    }
    for refused in [
        "evil.example:18001",
        "127.0.0.1:18002",
        "127.0.0.1",
        "localhost",
        "ops.example",
        "ops.example:18001",
        "127.0.0.1:x",
        "[::1",
        "",
        "localhost.evil.example:18001",
    ] {
        assert!(!a.names_this_server(refused, None), "{refused}");
    }
    let wildcard = at("0.0.0.0:18001");
    let arrived = Some("10.1.2.3:18001".parse().unwrap());
    assert!(wildcard.names_this_server("10.1.2.3:18001", arrived));
    assert!(!wildcard.names_this_server("10.9.9.9:18001", arrived));
    let v6 = at("[::1]:18001");
    assert!(v6.names_this_server("[::1]:18001", None));
    assert!(v6.names_this_server("127.0.0.1:18001", None));
}

#[test]
fn a_token_is_compared_whole_and_is_never_shown() {
    let t = AdminToken::new(b"  s3cret\n").unwrap();
    assert!(t.matches(b"s3cret"));
    for wrong in [&b"s3cre"[..], b"s3cret!", b"S3cret", b"", b"s3crets3cret"] {
        assert!(!t.matches(wrong), "{wrong:?}");
    }
    assert_eq!(format!("{t:?}"), "AdminToken(…)");
    assert!(AdminToken::new(b" \n").is_err());
    assert!(AdminToken::new(b"two words").is_err());
}

#[test]
fn only_a_bearer_credential_and_a_json_content_type_count() {
    let mut h = HeaderMap::new();
    assert!(bearer(&h).is_none() && !is_json(&h));
    h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
    h.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
    assert!(bearer(&h).is_none() && !is_json(&h));
    h.insert(header::AUTHORIZATION, "bearer  abc ".parse().unwrap());
    h.insert(
        header::CONTENT_TYPE,
        "Application/JSON; charset=utf-8".parse().unwrap(),
    );
    assert_eq!(bearer(&h), Some(&b"abc"[..]));
    assert!(is_json(&h));
}

#[test]
fn off_loopback_needs_a_token_and_the_error_says_why() {
    let token = AdminToken::new(b"t").unwrap();
    let lo = "127.0.0.1:1".parse().unwrap();
    let any = "0.0.0.0:1".parse().unwrap();
    assert!(AdminAccess::check_listen(lo, None).is_ok());
    assert!(AdminAccess::check_listen("[::1]:1".parse().unwrap(), None).is_ok());
    assert!(AdminAccess::check_listen(any, Some(&token)).is_ok());
    let e = AdminAccess::check_listen(any, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("not a loopback address") && e.contains("token_file") && e.contains("no TLS"),
        "{e}"
    );
    assert!(valid_allowed_host("a.example:1") && valid_allowed_host("[::1]:2"));
    assert!(
        !valid_allowed_host("http://a") && !valid_allowed_host("a:b") && !valid_allowed_host("")
    );
}
