// Package web holds the tests of the TypeScript side of the repository: the client
// generated from the API's OpenAPI document (clients/ts) and the example web app beside
// this file. They need Node.js and the npm packages of the repository's package-lock.json
// (`make npm`), and Debian's chromium for the browser test; a missing one fails the
// test, it is never skipped.
package web
