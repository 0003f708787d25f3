// The types the Rocket.Chat dialect's answers must fit: Rocket.Chat's own
// published typings (@rocket.chat/rest-typings and core-typings, pinned in
// package.json), as its REST API serializes them. Dataport's additions
// are declared here and nowhere else, so an answer carrying anything
// else fails the check.
//
// skipLibCheck is on because the typings import packages that play no
// part in these types (mongodb, the apps engine, ui-kit); the canaries at
// the end fail the check if one of the types used here resolved to any
// because a package it does need is missing.
import type { ValidateFunction } from 'ajv';
import type { FileProp, Serialized } from '@rocket.chat/core-typings';
import type { OperationResult } from '@rocket.chat/rest-typings';
import type {
	validateBadRequestErrorResponse,
	validateUnauthorizedErrorResponse,
} from '@rocket.chat/rest-typings/dist/v1/Ajv';

// Rocket.Chat's REST framework (API.v1.success) adds success to every
// result; the endpoint types leave it out.
type Success<T> = T & { success: true };

type DataDownloadPublished = Serialized<OperationResult<'GET', '/v1/users.requestDataDownload'>>;
type OperationPublished = DataDownloadPublished['exportOperation'];
type RoomPublished = Exclude<NonNullable<OperationPublished['roomList']>[number], Record<string, never>>;

// A roomList entry. Rocket.Chat answers null for a room without another
// participant (seed 000 shows it); the typing says undefined, which JSON
// cannot carry. That one field is widened; the empty-object alternative
// is left out, since the dialect never answers one.
type Room = Omit<RoomPublished, 'userId'> & { userId: RoomPublished['userId'] | null };

// A fileList entry: FileProp plus Dataport's checksum and signed link
// (absent once the files expired).
type File = FileProp & { sha256: string; url?: string };

// Dataport's additions to an operation (each present only when it says
// something).
type OperationExtras = {
	reason?: string;
	expiresAt?: string;
	filesExpired?: boolean;
	userNameTableTruncated?: boolean;
};

type Operation = Omit<OperationPublished, 'roomList' | 'fileList'> &
	OperationExtras & { roomList: Room[]; fileList: File[] };

/** GET /api/v1/users.requestDataDownload, 200. */
export type DataDownloadAnswer = Success<Omit<DataDownloadPublished, 'exportOperation'> & { exportOperation: Operation }>;

/**
 * POST /api/v1/rooms.export, 200, both variants, plus the id of the job
 * (absent when nobody could be mailed).
 */
export type RoomsExportAnswer = Serialized<Exclude<OperationResult<'POST', '/v1/rooms.export'>, void>> & {
	exportId?: string;
};

type Validated<F> = F extends ValidateFunction<infer T> ? T : never;

/** Every 4xx and 5xx answer but the 401. */
export type ErrorAnswer = Validated<typeof validateBadRequestErrorResponse>;

/** 401. */
export type UnauthorizedAnswer = Validated<typeof validateUnauthorizedErrorResponse>;

type IsAny<T> = 0 extends 1 & T ? true : false;
type Resolved<T> = IsAny<T> extends true
	? 'this published type resolved to any: a package it needs is missing from package.json'
	: [T] extends [never]
		? 'this published type resolved to never: its declaration moved'
		: true;

export const canaries: [
	Resolved<OperationPublished>,
	Resolved<OperationPublished['_id']>,
	Resolved<OperationPublished['_updatedAt']>,
	Resolved<OperationPublished['userData']['_id']>,
	Resolved<RoomPublished>,
	Resolved<FileProp>,
	Resolved<RoomsExportAnswer>,
	Resolved<ErrorAnswer>,
	Resolved<UnauthorizedAnswer>,
] = [true, true, true, true, true, true, true, true, true];
