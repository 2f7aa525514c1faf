"""The runbook's "core functionality" checklist against the running example service."""

from pathlib import Path

from tests.support.vbrpg_service import CLEAN_HEAD, ExampleService, database_rows


def test_health_reads_revision_and_code_head(service: ExampleService) -> None:
    response = service.client().get("/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "revision": CLEAN_HEAD, "code_head": CLEAN_HEAD}


def test_create_join_leave_add_and_remove_agent_delete_room(service: ExampleService) -> None:
    client = service.client()

    created = client.post("/api/rooms", json={"name": "Smoke test", "host_name": "alice"})
    assert created.status_code == 201
    code = created.json()["code"]
    assert len(code) == 6
    assert created.json()["participants"][0] | {"joined_at": None, "id": None} == {
        "id": None,
        "is_ai": False,
        "is_host": True,
        "player_name": "alice",
        "agent_name": None,
        "joined_at": None,
    }

    joined = client.post(f"/api/rooms/{code}/join", json={"player_name": "bob"})
    assert joined.status_code == 201
    assert joined.json()["player_name"] == "bob"

    first_agent = client.post(f"/api/rooms/{code}/agents")
    second_agent = client.post(f"/api/rooms/{code}/agents", json={"agent_name": "Merlin"})
    assert first_agent.status_code == second_agent.status_code == 201
    assert first_agent.json()["is_ai"] and second_agent.json()["agent_name"] == "Merlin"

    removed_latest = client.delete(f"/api/rooms/{code}/agents")
    assert removed_latest.status_code == 200
    assert removed_latest.json()["id"] == second_agent.json()["id"]
    removed_by_id = client.delete(f"/api/rooms/{code}/agents", params={"agent_id": first_agent.json()["id"]})
    assert removed_by_id.status_code == 200

    left = client.post(f"/api/rooms/{code}/leave", json={"player_name": "alice"})
    assert left.status_code == 200
    assert left.json() == {"code": code, "left": "alice", "host": "bob"}

    room = client.get(f"/api/rooms/{code}").json()
    assert [(seat["player_name"], seat["is_host"]) for seat in room["participants"]] == [("bob", True)]

    deleted = client.delete(f"/api/rooms/{code}")
    assert deleted.status_code == 200
    assert deleted.json() == {"code": code, "participants_removed": 1}
    assert client.get(f"/api/rooms/{code}").status_code == 404


def test_room_errors_are_404_and_409(service: ExampleService) -> None:
    client = service.client()
    client.post("/api/rooms", json={"name": "Tiny", "host_name": "alice", "max_players": 2, "code": "ABC123"})

    assert client.post("/api/rooms", json={"name": "Again", "host_name": "x", "code": "abc123"}).status_code == 409
    assert client.get("/api/rooms/ZZZ999").status_code == 404
    assert client.post("/api/rooms/ZZZ999/join", json={"player_name": "bob"}).status_code == 404
    assert client.post("/api/rooms/ABC123/join", json={"player_name": "alice"}).status_code == 409
    assert client.post("/api/rooms/ABC123/agents").status_code == 201
    full = client.post("/api/rooms/ABC123/join", json={"player_name": "carol"})
    assert full.status_code == 409
    assert "full" in full.json()["detail"]
    assert client.post("/api/rooms/ABC123/leave", json={"player_name": "carol"}).status_code == 404
    assert client.delete("/api/rooms/ABC123/agents", params={"agent_id": 999999}).status_code == 404
    assert client.post("/api/rooms", json={"name": "", "host_name": "x"}).status_code == 422


def test_a_room_in_play_takes_no_one_new(service: ExampleService, database: Path) -> None:
    client = service.client()
    code = client.post("/api/rooms", json={"name": "Started", "host_name": "alice"}).json()["code"]
    database_rows(database, "UPDATE game_rooms SET status = 'playing' WHERE code = ?", (code,))

    joined = client.post(f"/api/rooms/{code}/join", json={"player_name": "bob"})

    assert joined.status_code == 409
    assert "playing" in joined.json()["detail"]
    assert client.post(f"/api/rooms/{code}/agents").status_code == 409
    assert client.get(f"/api/rooms/{code}").json()["status"] == "playing"


def test_deleting_a_room_keeps_foreign_keys_intact(service: ExampleService, database: Path) -> None:
    client = service.client()
    code = client.post("/api/rooms", json={"name": "Throwaway", "host_name": "alice"}).json()["code"]
    client.post(f"/api/rooms/{code}/join", json={"player_name": "bob"})
    client.post(f"/api/rooms/{code}/agents")

    client.delete(f"/api/rooms/{code}")

    assert database_rows(database, "SELECT count(*) FROM game_room_participants") == [(0,)]
    assert database_rows(database, "PRAGMA foreign_key_check") == []
    assert database_rows(database, "SELECT count(*) FROM players") == [(2,)]


def test_a_player_is_removed_once_no_room_seats_them(service: ExampleService, database: Path) -> None:
    client = service.client()
    code = client.post("/api/rooms", json={"name": "Throwaway", "host_name": "alice"}).json()["code"]

    seated = client.delete("/api/players/alice")
    assert seated.status_code == 409
    assert code in seated.json()["detail"]
    client.delete(f"/api/rooms/{code}")
    removed = client.delete("/api/players/alice")

    assert (removed.status_code, removed.json()) == (200, {"name": "alice"})
    assert client.delete("/api/players/alice").status_code == 404
    assert database_rows(database, "SELECT count(*) FROM players WHERE name = 'alice'") == [(0,)]
    assert database_rows(database, "PRAGMA foreign_key_check") == []
