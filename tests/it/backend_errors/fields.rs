//! Missing fields, wrong types, `linkto` naming no user, `expiry` bounds and bad values.

use super::*;

// ---------------------------------------------------------------------------------------------
// 4. Missing fields
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn useradd_names_the_missing_field() {
    let server = populated().await;
    refused_authed(
        &server,
        json!({"op":"useradd","id":"m1"}),
        "missing_field",
        &["`user`"],
    )
    .await;
    refused_authed(
        &server,
        json!({"op":"useradd","id":"m2","user":{"name":"No Address","token":{"appid":APPID}}}),
        "missing_field",
        &["`user.address`"],
    )
    .await;
    refused_authed(
        &server,
        json!({"op":"useradd","id":"m3","user":{"address":"xyz@example.com",
            "token":{"expiry":525600,"device":"tablet"}}}),
        "missing_field",
        &["`user.token.appid`"],
    )
    .await;
}

#[tokio::test]
async fn userdel_tokendel_devices_without_a_user_name_the_missing_field() {
    let server = populated().await;
    for op in ["userdel", "tokendel", "devices"] {
        for request in [
            json!({"op":op,"id":"m4"}),
            json!({"op":op,"id":"m4","user":{}}),
            json!({"op":op,"id":"m4","user":{"name":"xyz@example.com"}}),
            json!({"op":op,"id":"m4","address":"xyz@example.com"}),
        ] {
            refused_authed(
                &server,
                request,
                "missing_field",
                &["`uid`", "user.address"],
            )
            .await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Wrong types
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn wrong_types_name_the_field_path() {
    let server = populated().await;
    let cases = [
        (
            json!({"op":"useradd","id":"t1","user":{"address":12345}}),
            "user.address",
        ),
        (
            json!({"op":"useradd","id":"t2","user":{"address":"xyz@example.com",
                "token":{"appid":APPID,"expiry":"525600","device":"tablet"}}}),
            "user.token.expiry",
        ),
        (
            json!({"op":"useradd","id":"t3","user":{"address":"xyz@example.com",
                "token":{"appid":APPID,"expiry":1.5}}}),
            "user.token.expiry",
        ),
        (
            json!({"op":"useradd","id":"t4","user":{"address":"xyz@example.com",
                "token":{"appid":7}}}),
            "user.token.appid",
        ),
        (
            json!({"op":"useradd","id":"t5","user":{"address":"xyz@example.com",
                "token":"com.example.app"}}),
            "user.token",
        ),
        (
            json!({"op":"useradd","id":"t6","user":"xyz@example.com"}),
            "user",
        ),
        (json!({"op":"userdel","id":"t8","uid":"1"}), "uid"),
        (json!({"op":"tokendel","id":"t9","uid":"3"}), "uid"),
        (json!({"op":"devices","id":"t10","uid":"1"}), "uid"),
        (json!({"op":"userdel","id":"t11","uid":-1}), "uid"),
        (
            json!({"op":"devices","id":"t12","user":{"uid":"1"}}),
            "user.uid",
        ),
        (
            json!({"op":"devices","id":"t13","user":{"address":1}}),
            "user.address",
        ),
        (
            json!({"op":"userdel","id":"t14","user":"xyz@example.com"}),
            "user",
        ),
        (json!({"op":"tokendel","id":"t15","user":true}), "user"),
    ];
    for (request, path) in cases {
        refused_authed(&server, request, "wrong_type", &[path]).await;
    }
}

#[tokio::test]
async fn arrays_are_not_objects() {
    // serde would read a struct from a JSON array by position; `user` and `user.token` must be
    // objects, and a positional array must neither create, nor delete, nor list anyone.
    let server = populated().await;
    let cases = [
        (
            json!({"op":"useradd","id":"a1","user":["xyz@example.com"]}),
            "user",
        ),
        (
            json!({"op":"useradd","id":"a2","user":["new@example.com","New",[APPID]]}),
            "user",
        ),
        (
            json!({"op":"useradd","id":"a3","user":{"address":"xyz@example.com",
                "token":[APPID,525600,"tablet"]}}),
            "user.token",
        ),
        (json!({"op":"devices","id":"a4","user":[1]}), "user"),
        (json!({"op":"tokendel","id":"a5","user":[3]}), "user"),
        (json!({"op":"userdel","id":"a6","user":[1]}), "user"),
        (
            json!({"op":"userdel","id":"a7","user":[null,"xyz@example.com"]}),
            "user",
        ),
    ];
    for (request, path) in cases {
        refused_authed(&server, request, "wrong_type", &[path]).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 6. linkto naming no user
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn linkto_naming_no_user_creates_nothing() {
    let server = populated().await;
    refused_authed(
        &server,
        json!({"op":"useradd","id":"l1","user":{"address":"new@example.com","name":"New",
            "token":{"appid":APPID,"expiry":525600,"linkto":"ghost@example.com"}}}),
        "no_such_user",
        &["ghost@example.com", "linkto"],
    )
    .await;
    let devices = server.devices("new@example.com").await;
    assert_eq!(devices["error"], "no_such_user", "{devices}");
    // An existing user is neither renamed nor given a token.
    refused_authed(
        &server,
        json!({"op":"useradd","id":"l2","user":{"address":"lone@example.com","name":"Renamed",
            "token":{"appid":APPID,"linkto":"ghost@example.com","device":"tablet"}}}),
        "no_such_user",
        &["ghost@example.com"],
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// 7. expiry
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn expiry_outside_one_minute_to_ten_years_is_bad_expiry() {
    let server = populated().await;
    for expiry in [0_i64, -5, 5_256_001, i64::MAX, i64::MIN] {
        for token in [
            json!({"appid":APPID,"expiry":expiry}),
            json!({"appid":APPID,"expiry":expiry,"device":"tablet"}),
            json!({"appid":APPID,"expiry":expiry,"linkto":"xyz@example.com"}),
        ] {
            refused_authed(
                &server,
                json!({"op":"useradd","id":"e1","user":{"address":"new@example.com","token":token}}),
                "bad_expiry",
                &["user.token.expiry", &expiry.to_string(), "5256000"],
            )
            .await;
        }
    }
}

/// `expires_at - created_at` of the token of `uid`, in milliseconds.
fn token_lifetime(server: &TestServer, uid: u64) -> i64 {
    let conn = rusqlite::Connection::open(server.state.config.data_dir.join("octet.db")).unwrap();
    conn.query_row(
        "SELECT expires_at - created_at FROM tokens WHERE uid = ?1",
        [uid],
        |row| row.get(0),
    )
    .unwrap()
}

#[tokio::test]
async fn expiry_of_one_minute_and_of_ten_years_is_accepted() {
    let server = populated().await;
    for (address, expiry) in [
        ("short@example.com", 1_i64),
        ("long@example.com", 5_256_000),
    ] {
        let answer = accepted(
            &server,
            json!({"op":"useradd","user":{"address":address,"token":{"appid":APPID,"expiry":expiry}}}),
        )
        .await;
        assert!(answer["user"]["token"].is_string(), "{answer}");
        let uid = answer["user"]["uid"].as_u64().unwrap();
        assert_eq!(token_lifetime(&server, uid), expiry * 60_000);
    }
}

// ---------------------------------------------------------------------------------------------
// 8. Values
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn bad_addresses_are_bad_value() {
    let server = populated().await;
    let too_long = "a".repeat(256);
    let cases = [
        ("", "empty"),
        (too_long.as_str(), "255"),
        ("xyz @example.com", "spaces or control"),
        ("xyz\u{1}@example.com", "spaces or control"),
        ("xyz@example.com\n", "spaces or control"),
        ("xyz\t@example.com", "spaces or control"),
        ("xyz\u{7f}@example.com", "spaces or control"),
    ];
    for (address, why) in cases {
        for token in [
            json!(null),
            json!({"appid":APPID}),
            json!({"appid":APPID,"device":"d"}),
        ] {
            let mut user = json!({"address":address});
            if !token.is_null() {
                user["token"] = token;
            }
            refused_authed(
                &server,
                json!({"op":"useradd","id":"v1","user":user}),
                "bad_value",
                &["user.address", why],
            )
            .await;
        }
        for op in ["userdel", "tokendel", "devices"] {
            refused_authed(
                &server,
                json!({"op":op,"id":"v2","user":{"address":address}}),
                "bad_value",
                &["user.address", why],
            )
            .await;
        }
        refused_authed(
            &server,
            json!({"op":"useradd","id":"v3","user":{"address":"new@example.com",
                "token":{"appid":APPID,"linkto":address}}}),
            "bad_value",
            &["user.token.linkto", why],
        )
        .await;
    }
}

#[tokio::test]
async fn empty_device_id_and_empty_appid_are_bad_value() {
    let server = populated().await;
    refused_authed(
        &server,
        json!({"op":"useradd","id":"v4","user":{"address":"xyz@example.com",
            "token":{"appid":APPID,"device":""}}}),
        "bad_value",
        &["user.token.device", "empty"],
    )
    .await;
    refused_authed(
        &server,
        json!({"op":"useradd","id":"v5","user":{"address":"new@example.com",
            "token":{"appid":APPID,"device":"my phone"}}}),
        "bad_value",
        &["user.token.device", "spaces"],
    )
    .await;
    for address in ["xyz@example.com", "new@example.com"] {
        for token in [
            json!({"appid":""}),
            json!({"appid":"","device":"tablet"}),
            json!({"appid":"","linkto":"xyz@example.com"}),
        ] {
            refused_authed(
                &server,
                json!({"op":"useradd","id":"v6","user":{"address":address,"token":token}}),
                "bad_value",
                &["user.token.appid", "empty"],
            )
            .await;
        }
    }
}

#[tokio::test]
async fn address_of_255_characters_is_accepted() {
    let server = populated().await;
    let address = format!("{}@example.com", "a".repeat(255 - "@example.com".len()));
    assert_eq!(address.chars().count(), 255);
    let answer = accepted(
        &server,
        json!({"op":"useradd","user":{"address":address,"token":{"appid":APPID,"device":"phone"}}}),
    )
    .await;
    assert_eq!(answer["user"]["address"], json!(address));
    let devices = accepted(&server, json!({"op":"devices","user":{"address":address}})).await;
    assert_eq!(devices["primary"]["address"], json!(address));
    // 255 characters, not bytes.
    let wide = "é".repeat(255);
    accepted(&server, json!({"op":"useradd","user":{"address":wide}})).await;
}

#[tokio::test]
async fn linked_address_the_server_made_can_name_its_user() {
    // A second device of a 255-character primary gets `<primary>-linked-1`, 264 characters:
    // whatever address the server hands out must be usable to name that user again.
    let server = populated().await;
    let address = "b".repeat(255);
    server.device_token(&address, "phone").await;
    let linked = server.device_token(&address, "laptop").await;
    let linked_address = linked["user"]["address"].as_str().unwrap().to_string();
    for op in ["devices", "tokendel", "userdel"] {
        let answer = server
            .backend(json!({"op":op,"user":{"address":linked_address}}))
            .await;
        assert_eq!(
            answer["result"],
            json!(true),
            "{op} of the server-issued address {} characters long -> {answer}",
            linked_address.chars().count()
        );
    }
}
