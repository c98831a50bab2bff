#!/usr/bin/env node
/**
 * The bedrock-metering CDK app: `npx cdk deploy --all` deploys both stacks (scripts/deploy builds the Rust
 * functions first). Account and region come from the CLI's credentials (`--profile`, AWS_REGION) or the
 * `region` context key; see lib/config.ts for every other setting.
 */
import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { buildApp } from '../lib/app';

const app = new App();
buildApp(app);
// Findings without an acknowledgement (and its reason) fail synthesis, hence every deploy.
Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
app.synth();
