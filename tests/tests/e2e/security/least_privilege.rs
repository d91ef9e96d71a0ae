//! Nobody holds more than they need, and nobody can take the store's last
//! admin away: two admins demoting each other at the same moment leave one.

use evergreen_tests::app::TestStack;
use evergreen_tests::client::{expect, expect_problem};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn two_admins_demoting_each_other_at_once_leave_the_store_one_admin() {
    // Arrange: a second admin beside the bootstrap one.
    let stack = TestStack::start().await;
    let api = stack.api(0);
    let mut survivor = stack.admin().await;
    let mut other = stack.customer().await;
    let mut refused_by_the_check = 0;
    for round in 1..=10 {
        let promote = json!({"role": "admin"});
        let other_id = other.user_id.to_string();
        expect(
            api.update_user(&survivor.access_token, &other_id, &promote)
                .await,
            StatusCode::OK,
        )
        .await;
        // A token carries the role it was issued with: sign in as an admin.
        let promoted = api.login_ok(&other.email, &other.password).await;
        let (a, b) = (survivor.clone(), promoted);
        let (a_id, b_id) = (a.user_id.to_string(), b.user_id.to_string());
        let demote = json!({"role": "customer"});

        // Act: each demotes the other, at the same moment.
        let (by_a, by_b) = tokio::join!(
            api.update_user(&a.access_token, &b_id, &demote),
            api.update_user(&b.access_token, &a_id, &demote),
        );

        // Assert: one change went through. The other was refused: by the
        // atomic check (409 last_admin) when both passed authorization at
        // once, or as a non-admin (403) when it came second.
        let statuses = [by_a.status(), by_b.status()];
        println!("round {round}, each demoting the other at once: {statuses:?}");
        assert_eq!(
            statuses.iter().filter(|s| **s == StatusCode::OK).count(),
            1,
            "{statuses:?}"
        );
        let (refused, kept, demoted) = if by_a.status() == StatusCode::OK {
            (by_b, a, b)
        } else {
            (by_a, b, a)
        };
        if refused.status() == StatusCode::CONFLICT {
            expect_problem(refused, StatusCode::CONFLICT, "last_admin").await;
            refused_by_the_check += 1;
        } else {
            assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        }
        let users = api.all_pages(&kept.access_token, "/users").await;
        let admins = users.iter().filter(|u| u["role"] == "admin").count();
        assert_eq!(admins, 1, "{users:?}");
        if refused_by_the_check >= 2 {
            return;
        }
        (survivor, other) = (kept, demoted);
    }
    panic!("the two demotions never raced past authorization together: {refused_by_the_check}");
}
