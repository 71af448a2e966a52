// Package cowtest holds the helpers the tests of cow/'s packages share
// (the engine's, the scanner's): fixtures and stores, never used by code
// that ships.
package cowtest
