/**
 * The one helper that builds every Rust Lambda of the project: arm64, provided.al2023, its own log group with
 * a retention, its own role that may write to that log group and nothing else (grants are added by callers).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { FUNCTION_TIMEOUT_ENV } from './timeout-budget';

export interface RustFunctionProps {
  /** The cargo binary name, e.g. `chat-api`: the asset is `<assetDir>/<binaryName>/bootstrap.zip`. */
  readonly binaryName: string;
  /** A fixed name (operators and scripts find the function by it); by default CloudFormation makes one up. */
  readonly functionName?: string;
  readonly description: string;
  readonly memorySize: number;
  readonly timeout: Duration;
  readonly environment: Record<string, string>;
  /** Directory of cargo-lambda's output (absolute); tests point it at test/placeholder-lambda. */
  readonly assetDir: string;
  readonly logRetention: logs.RetentionDays;
  readonly removalPolicy: RemovalPolicy;
}

export class RustFunction extends Construct {
  public readonly function: lambda.Function;
  public readonly logGroup: logs.LogGroup;
  public readonly role: iam.Role;

  constructor(scope: Construct, id: string, props: RustFunctionProps) {
    super(scope, id);

    this.logGroup = new logs.LogGroup(this, 'LogGroup', {
      retention: props.logRetention,
      removalPolicy: props.removalPolicy,
    });

    // A role of our own instead of AWSLambdaBasicExecutionRole, which may write to every log group.
    this.role = new iam.Role(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: `Execution role of the ${props.binaryName} Lambda`,
    });
    this.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'WriteOwnLogGroup',
        actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
        resources: [this.logGroup.logGroupArn],
      }),
    );

    this.function = new lambda.Function(this, 'Function', {
      functionName: props.functionName,
      description: props.description,
      runtime: lambda.Runtime.PROVIDED_AL2023,
      architecture: lambda.Architecture.ARM_64,
      handler: 'bootstrap',
      code: lambda.Code.fromAsset(resolveRustAsset(props.assetDir, props.binaryName)),
      memorySize: props.memorySize,
      timeout: props.timeout,
      // The function reads its own timeout to check its budget at cold start (see timeout-budget.ts).
      environment: { RUST_LOG: 'info', ...props.environment, [FUNCTION_TIMEOUT_ENV]: String(props.timeout.toSeconds()) },
      role: this.role,
      logGroup: this.logGroup,
      // Lambda's own lines (START/END/REPORT) in JSON too; sets AWS_LAMBDA_LOG_FORMAT=JSON for the function.
      loggingFormat: lambda.LoggingFormat.JSON,
    });
  }
}

/**
 * Finds the deployment package of a Rust binary.
 *
 * Why prebuilt assets and not a bundling step at synth (e.g. cargo-lambda-cdk's RustFunction): an arm64
 * cross-build needs cargo-lambda, zig and the aarch64 Rust target on the machine that synthesizes, takes
 * minutes, and would run on every `cdk synth`, `cdk diff`, `cdk destroy` and in every test. So the deploy
 * script runs `cargo lambda build --release --arm64 --output-format zip` once at the repo root and the app
 * takes `target/lambda/<bin>/bootstrap.zip` as is; tests point `lambdaAssetDir` at test/placeholder-lambda.
 */
export function resolveRustAsset(assetDir: string, binaryName: string): string {
  const binaryDir = path.join(assetDir, binaryName);
  const zip = path.join(binaryDir, 'bootstrap.zip');
  if (fs.existsSync(zip)) return zip;
  // A directory with a `bootstrap` executable is zipped by the CDK (the test placeholder is one).
  if (fs.existsSync(path.join(binaryDir, 'bootstrap'))) return binaryDir;
  throw new Error(
    `No Lambda package for the Rust binary '${binaryName}': expected ${zip}. ` +
      'Build it at the repo root with `cargo lambda build --release --arm64 --output-format zip` ' +
      '(scripts/deploy does), or synthesize without real code with `-c lambdaAssetDir=test/placeholder-lambda` ' +
      '(fine for synth, diff and destroy; never deploy it).',
  );
}
