from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from app.api.deps import AdminPrincipal, UserAdminDep
from app.schemas.auth import CreateUserRequest, UpdateUserRequest, UserList, UserOut
from app.schemas.wire import MAX_OFFSET, RowIdPath

router = APIRouter(prefix="/api/admin/users", tags=["admin"])


@router.get("")
async def list_users(
    _: AdminPrincipal,
    users: UserAdminDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> UserList:
    rows, total = await users.list(limit=limit, offset=offset)
    return UserList(users=[UserOut.model_validate(u) for u in rows], total=total)


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_user(body: CreateUserRequest, _: AdminPrincipal, users: UserAdminDep) -> UserOut:
    return UserOut.model_validate(await users.create(body))


@router.patch("/{user_id}")
async def update_user(
    user_id: RowIdPath, body: UpdateUserRequest, actor: AdminPrincipal, users: UserAdminDep
) -> UserOut:
    return UserOut.model_validate(await users.update(actor, user_id, body))


@router.delete("/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_user(user_id: RowIdPath, actor: AdminPrincipal, users: UserAdminDep) -> None:
    await users.delete(actor, user_id)
