// Starts the console's first request as soon as this small module arrives, while the console
// itself (./console.js) is still loading: its first view is the process list.

import { getJson } from "./api.js";

/** `GET /processes`, started early; the console's first refresh takes it. */
export const firstProcesses = getJson("/processes");
// The console handles its outcome (an Unauthorized error included) when it takes it.
firstProcesses.catch(() => {});
