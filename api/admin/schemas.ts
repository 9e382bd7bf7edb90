import { type Static, Type } from '@sinclair/typebox';

export const NameParam = Type.Object({ name: Type.String({ maxLength: 256 }) });

const Size = Type.Union([Type.String({ maxLength: 32 }), Type.Integer({ minimum: 0 })], {
  description: 'bytes, or a size like 256m / 2g',
});

export const NewContainer = Type.Object(
  {
    name: Type.String({ maxLength: 256 }),
    image: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
    memory: Type.Optional(Size),
    // Not bounded here: a number out of range is HOODY_LIMIT_INVALID from the parser, like a string one.
    cpus: Type.Optional(Type.Union([Type.Number(), Type.String({ maxLength: 16 })])),
    // One type list, not a union: with coerceTypes an anyOf turns null into "" (the string branch comes first),
    // so `"disk": null` (no quota) was refused as an invalid size.
    disk: Type.Optional(
      Type.Unsafe<string | number | null>({
        type: ['null', 'string', 'integer'],
        maxLength: 32,
        minimum: 0,
        description: 'bytes, a size like 2g, or null for no quota',
      }),
    ),
    pids: Type.Optional(Type.Integer({ minimum: 8, maximum: 1_000_000 })),
    domains: Type.Optional(
      Type.Array(Type.String({ maxLength: 256 }), {
        maxItems: 100,
        description: 'names it may route, certify and order (example.org, *.example.org); absent: any non-reserved name',
      }),
    ),
    host: Type.Optional(Type.String({ maxLength: 63, description: 'in a fleet: create it on this host (else placement picks one)' })),
  },
  { additionalProperties: false },
);
export type NewContainer = Static<typeof NewContainer>;

export const Container = Type.Object(
  {
    name: Type.String(),
    id: Type.String(),
    state: Type.String(),
    image: Type.String(),
    memoryBytes: Type.Integer(),
    cpus: Type.Number(),
    diskBytes: Type.Union([Type.Integer(), Type.Null()]),
    pidsLimit: Type.Integer(),
    engineId: Type.Union([Type.String(), Type.Null()]),
    clonedFrom: Type.Union([Type.String(), Type.Null()]),
    createdAt: Type.String(),
    snapshots: Type.Array(Type.String()),
  },
  { $id: 'Container' },
);

/** A recover's answer: the container as it is now, and whether it was rebuilt. */
export const Recovered = Type.Object({ container: Container, recovered: Type.Boolean() });

export const CreatedContainer = Type.Object({
  name: Type.String(),
  id: Type.String(),
  state: Type.String(),
  token: Type.String({ description: 'shown once; only its hash is kept' }),
  host: Type.Optional(Type.String({ description: 'in a fleet: the host it was created on' })),
});

export const NewSnapshot = Type.Object({ name: Type.String({ maxLength: 256 }) }, { additionalProperties: false });
export const Snapshot = Type.Object({ name: Type.String(), path: Type.String(), createdAt: Type.String() });
export const SnapshotInfo = Type.Object({
  name: Type.String(),
  createdAt: Type.String(),
  exclusiveBytes: Type.Union([Type.Integer(), Type.Null()]),
  referencedBytes: Type.Union([Type.Integer(), Type.Null()]),
  auto: Type.Boolean(),
});
export const SnapshotParams = Type.Object({ name: Type.String({ maxLength: 256 }), snapshot: Type.String({ maxLength: 256 }) });
export const Restored = Type.Object({ restored: Type.String(), kept: Type.String() });
export const ScheduleBody = Type.Object(
  { every: Type.String({ maxLength: 16, description: 'e.g. 15m, 1h, 1d' }), keep: Type.Integer({ description: 'automatic snapshots kept' }) },
  { additionalProperties: false },
);
export const Schedule = Type.Object({ container: Type.String(), everyS: Type.Integer(), keep: Type.Integer(), nextAt: Type.String() });
export const CloneBody = Type.Object({ name: Type.String({ maxLength: 256 }) }, { additionalProperties: false });

export const NewToken = Type.Object(
  {
    user: Type.Optional(Type.String({ maxLength: 64 })),
    scopes: Type.Optional(Type.Array(Type.String({ maxLength: 16 }), { maxItems: 8 })),
  },
  { additionalProperties: false },
);
export type NewToken = Static<typeof NewToken>;

export const Token = Type.Object({
  token: Type.String(),
  id: Type.String(),
  container: Type.String(),
  user: Type.String(),
  scopes: Type.Array(Type.String()),
});

export const Deleted = Type.Object({ name: Type.String(), deleted: Type.Boolean() });
