//! Users in Redis: a hash per user (its layout is `from_fields` here, the
//! fields `register.lua` writes), a unique email index and a creation index.

use std::collections::HashMap;

use redis::Value;
use uuid::Uuid;

use super::model::{Role, StoredUser, User};
use crate::redis::keys::{self, Keys};
use crate::redis::{Redis, RedisError, scripts, value};

/// What registering did.
#[derive(Debug)]
pub enum RegisterOutcome {
    Created(User),
    /// An account with this email exists.
    EmailTaken,
}

/// What an update of a user changes; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct UserChanges {
    pub name: Option<String>,
    pub role: Option<Role>,
    pub disabled: Option<bool>,
    /// An argon2id hash, already computed.
    pub password_hash: Option<String>,
    /// The sessions that end with the change.
    pub end_sessions: EndSessions,
}

impl UserChanges {
    /// The hash fields to set, as `from_fields` reads them.
    fn fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = Vec::new();
        if let Some(name) = &self.name {
            fields.push(("name", name.clone()));
        }
        if let Some(role) = self.role {
            fields.push(("role", role.as_str().to_owned()));
        }
        if let Some(disabled) = self.disabled {
            fields.push(("disabled", if disabled { "1" } else { "0" }.to_owned()));
        }
        if let Some(hash) = &self.password_hash {
            fields.push(("password_hash", hash.clone()));
        }
        fields
    }
}

/// Which sessions an update ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EndSessions {
    #[default]
    None,
    All,
    AllBut(Uuid),
}

#[derive(Debug)]
pub struct UserStore<'a> {
    pub redis: &'a Redis,
    pub keys: &'a Keys,
}

/// Fields of a user to be created.
#[derive(Debug)]
pub struct NewUser<'a> {
    pub email: &'a str,
    pub name: &'a str,
    pub role: Role,
    pub password_hash: &'a str,
}

impl UserStore<'_> {
    /// Creates the user unless the email is taken.
    pub async fn create(&self, new: NewUser<'_>) -> Result<RegisterOutcome, RedisError> {
        let id = Uuid::new_v4();
        let now = chrono::Utc::now();
        let created_at = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut pipe = redis::pipe();
        pipe.add_command(
            scripts::REGISTER
                .call(&[
                    self.keys.user_email(new.email),
                    self.keys.user(id),
                    self.keys.users_index(),
                    self.keys.admins(),
                ])
                .arg(id.to_string())
                .arg(new.email)
                .arg(new.name)
                .arg(new.role.as_str())
                .arg(new.password_hash)
                .arg(&created_at)
                .arg(keys::created_member(now.timestamp_millis(), id))
                .to_owned(),
        );
        let (reply,): (Vec<Value>,) = self.redis.write("register", &pipe).await?;
        match reply.as_slice() {
            [Value::Int(1)] => Ok(RegisterOutcome::Created(User {
                id,
                email: new.email.to_owned(),
                name: new.name.to_owned(),
                role: new.role,
                disabled: false,
                created_at,
            })),
            [Value::Int(0), _] => Ok(RegisterOutcome::EmailTaken),
            _ => Err(RedisError::Unexpected(
                "register script: unexpected reply".to_owned(),
            )),
        }
    }

    /// A user as last confirmed on the replicas.
    pub async fn get(&self, id: Uuid) -> Result<Option<StoredUser>, RedisError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL").arg(self.keys.user(id));
        let (fields,): (HashMap<String, String>,) = self.redis.read("user_get", &pipe).await?;
        if fields.is_empty() {
            Ok(None)
        } else {
            from_fields(&fields).map(Some)
        }
    }

    pub async fn find_by_email(&self, email: &str) -> Result<Option<StoredUser>, RedisError> {
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(self.keys.user_email(email));
        let (id,): (Option<String>,) = self.redis.read("user_by_email", &pipe).await?;
        match id.and_then(|id| id.parse().ok()) {
            Some(id) => self.get(id).await,
            None => Ok(None),
        }
    }

    /// Users in creation order, after the index member `after`.
    pub async fn list(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<User>, Option<String>), RedisError> {
        let start = after.map_or_else(|| "-".to_owned(), |member| format!("({member}"));
        let mut pipe = redis::pipe();
        pipe.cmd("ZRANGE")
            .arg(self.keys.users_index())
            .arg(start)
            .arg("+")
            .arg("BYLEX")
            .arg("LIMIT")
            .arg(0)
            .arg(limit + 1);
        let (mut members,): (Vec<String>,) = self.redis.read("users_list", &pipe).await?;
        let more = members.len() > limit;
        members.truncate(limit);
        let mut pipe = redis::pipe();
        for member in &members {
            let id = keys::member_id(member)
                .ok_or_else(|| RedisError::Unexpected("bad users index member".to_owned()))?;
            pipe.cmd("HGETALL").arg(self.keys.user(id));
        }
        let records: Vec<HashMap<String, String>> = if members.is_empty() {
            Vec::new()
        } else {
            self.redis.read("users_list", &pipe).await?
        };
        let users = records
            .iter()
            .filter(|fields| !fields.is_empty())
            .map(|fields| from_fields(fields).map(|stored| stored.user))
            .collect::<Result<Vec<_>, _>>()?;
        let next = if more { members.last().cloned() } else { None };
        Ok((users, next))
    }

    /// Applies `changes`, made by user `by`, and ends sessions as they say,
    /// atomically; refused when it would leave the store without an enabled
    /// admin.
    pub async fn update(
        &self,
        id: Uuid,
        by: Uuid,
        changes: &UserChanges,
    ) -> Result<UpdateUserOutcome, RedisError> {
        let (mode, keep) = match changes.end_sessions {
            EndSessions::None => ("none", String::new()),
            EndSessions::All => ("all", String::new()),
            EndSessions::AllBut(session) => ("others", session.to_string()),
        };
        let mut call = scripts::UPDATE_USER.call(&[
            self.keys.user(id),
            self.keys.user_sessions(id),
            self.keys.admins(),
            self.keys.user(by),
            self.keys.legacy_user_sessions(id),
        ]);
        call.arg(self.keys.session_prefix()).arg(mode).arg(keep);
        for (field, value) in changes.fields() {
            call.arg(field).arg(value);
        }
        let reply = self.redis.run_script("user_update", call).await?;
        Ok(match reply.tag.as_str() {
            "updated" => UpdateUserOutcome::Updated(from_fields(&reply.fields(0))?),
            "missing" => UpdateUserOutcome::Missing,
            "last_admin" => UpdateUserOutcome::LastAdmin,
            _ => return Err(reply.unknown()),
        })
    }
}

/// What [`UserStore::update`] did.
#[derive(Debug)]
pub enum UpdateUserOutcome {
    Updated(StoredUser),
    Missing,
    /// Nothing changed: the user is the last enabled admin.
    LastAdmin,
}

/// A user and its password hash from the user's hash.
fn from_fields(fields: &HashMap<String, String>) -> Result<StoredUser, RedisError> {
    Ok(StoredUser {
        user: User {
            id: value::parse(fields, "id")?,
            email: value::field(fields, "email")?.to_owned(),
            name: value::field(fields, "name")?.to_owned(),
            role: Role::parse(value::field(fields, "role")?).ok_or_else(|| {
                RedisError::Unexpected("stored user has an unknown role".to_owned())
            })?,
            disabled: value::field(fields, "disabled")? == "1",
            created_at: value::field(fields, "created_at")?.to_owned(),
        },
        password_hash: value::field(fields, "password_hash")?.to_owned(),
    })
}
