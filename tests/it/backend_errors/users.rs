//! Requests naming no such user, and links the backend may not make.

use super::*;

// ---------------------------------------------------------------------------------------------
// 9. No such user
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn userdel_tokendel_devices_of_a_missing_user_is_no_such_user() {
    let server = populated().await;
    for op in ["userdel", "tokendel", "devices"] {
        refused_authed(
            &server,
            json!({"op":op,"id":"n1","uid":999}),
            "no_such_user",
            &["999"],
        )
        .await;
        refused_authed(
            &server,
            json!({"op":op,"id":"n2","user":{"uid":998}}),
            "no_such_user",
            &["998"],
        )
        .await;
        refused_authed(
            &server,
            json!({"op":op,"id":"n3","user":{"address":"ghost@example.com"}}),
            "no_such_user",
            &["ghost@example.com"],
        )
        .await;
        // Addresses are exact: no case folding, no prefix match.
        refused_authed(
            &server,
            json!({"op":op,"id":"n4","user":{"address":"XYZ@example.com"}}),
            "no_such_user",
            &["XYZ@example.com"],
        )
        .await;
    }
}

// ---------------------------------------------------------------------------------------------
// 10. Linking
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn primary_linking_to_its_own_person_is_bad_link() {
    let server = populated().await;
    // To itself, and to its own linked user; the name in the request is not applied either.
    for linkto in ["xyz@example.com", "xyz@example.com-linked-1"] {
        refused_authed(
            &server,
            json!({"op":"useradd","id":"k1","user":{"address":"xyz@example.com","name":"Renamed",
                "token":{"appid":APPID,"expiry":525600,"linkto":linkto}}}),
            "bad_link",
            &["xyz@example.com", "itself"],
        )
        .await;
    }
}

#[tokio::test]
async fn user_linked_to_another_person_is_bad_link() {
    let server = populated().await;
    // lone@ joins xyz's person; then neither it nor xyz's device user may join abc's.
    accepted(
        &server,
        json!({"op":"useradd","user":{"address":"lone@example.com",
            "token":{"appid":APPID,"linkto":"xyz@example.com"}}}),
    )
    .await;
    for address in ["lone@example.com", "xyz@example.com-linked-1"] {
        refused_authed(
            &server,
            json!({"op":"useradd","id":"k2","user":{"address":address,"name":"Renamed",
                "token":{"appid":APPID,"linkto":"abc@example.com"}}}),
            "bad_link",
            &[address, "already linked", "userdel"],
        )
        .await;
    }
}

#[tokio::test]
async fn primary_with_linked_users_is_bad_link() {
    let server = populated().await;
    refused_authed(
        &server,
        json!({"op":"useradd","id":"k3","user":{"address":"xyz@example.com","name":"Renamed",
            "token":{"appid":APPID,"linkto":"abc@example.com"}}}),
        "bad_link",
        &["xyz@example.com", "linked users"],
    )
    .await;
}

#[tokio::test]
async fn ninth_device_is_device_limit() {
    let server = populated().await;
    for n in 3..=8 {
        server
            .device_token("xyz@example.com", &format!("dev-{n}"))
            .await;
    }
    let devices = server.devices("xyz@example.com").await;
    assert_eq!(devices["devices"].as_array().unwrap().len(), 8, "{devices}");
    // A new device, named from the primary or from a linked address, with a new name.
    for address in ["xyz@example.com", "xyz@example.com-linked-3"] {
        refused_authed(
            &server,
            json!({"op":"useradd","id":"k4","user":{"address":address,"name":"Renamed",
                "token":{"appid":APPID,"expiry":525600,"device":"dev-9"}}}),
            "device_limit",
            &["xyz@example.com", "8 devices", "userdel"],
        )
        .await;
    }
    // linkto from an existing user and from a user that would be created.
    for address in ["lone@example.com", "new@example.com"] {
        refused_authed(
            &server,
            json!({"op":"useradd","id":"k5","user":{"address":address,"name":"Renamed",
                "token":{"appid":APPID,"linkto":"xyz@example.com-linked-1"}}}),
            "device_limit",
            &["xyz@example.com", "8 devices"],
        )
        .await;
    }
    // A device the person already has still gets a fresh token.
    let again = server.device_token("xyz@example.com", "dev-8").await;
    assert_eq!(again["linked"], "true");
}
