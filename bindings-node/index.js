'use strict';
// The CommonJS entry: `const OpenAI = require('slmkit')`, as `require('openai').OpenAI`.
module.exports = require('./client.js')(require('openai'), require('openai/streaming').Stream);
